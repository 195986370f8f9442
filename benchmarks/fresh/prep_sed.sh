#!/bin/bash
# Data preparation: generate raw text records, then clean them with sed/tr,
# project columns with cut, dedupe with sort -u and split into shards.
secs=${1:-40}
work=$(mktemp -d /tmp/fresh-prep.XXXXXX)
trap 'rm -rf "$work"' EXIT
for i in 1 2 3; do
  awk -v s=$i 'BEGIN{srand(s); for(n=0;n<150000;n++) printf "%d|  User%d |%s|%.4f\n", n, int(rand()*5000), (rand()<0.5?"YES":"no"), rand()}' > "$work/raw$i.txt"
done
end=$((SECONDS + secs))
while [ $SECONDS -lt $end ]; do
  for i in 1 2 3; do
    sed -e 's/ *| */|/g' -e 's/YES/yes/' "$work/raw$i.txt" | tr 'A-Z' 'a-z' | cut -d'|' -f2,3,4 \
      | sort -u | split -l 20000 - "$work/shard$i."
  done
done
