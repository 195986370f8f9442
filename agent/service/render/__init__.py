"""Text (and JSON-ready) views of what the CLI prints, one module per subject.

Rendering lives here, above the layers it draws from, so that sense, act and
decide return data and never decide how a terminal shows it."""
