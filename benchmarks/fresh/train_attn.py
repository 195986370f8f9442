"""Training: a small self-attention encoder on random token batches, AdamW."""
import sys
import time

import torch

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40
torch.manual_seed(1)
layer = torch.nn.TransformerEncoderLayer(d_model=96, nhead=4, dim_feedforward=192,
                                         batch_first=True)
model = torch.nn.Sequential(torch.nn.Embedding(2000, 96), torch.nn.TransformerEncoder(layer, 2))
head = torch.nn.Linear(96, 2000)
opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=3e-4)
end = time.monotonic() + seconds
while time.monotonic() < end:
    x = torch.randint(0, 2000, (16, 32))
    loss = torch.nn.functional.cross_entropy(head(model(x)).reshape(-1, 2000), x.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
