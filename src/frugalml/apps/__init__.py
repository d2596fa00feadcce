"""Applications built on frugalml's public API: one folder each (desk, monitor, credit,
recommend), with its own input kind and rungs if it needs them, its routes mounted on the one
server (`frugalml.serve.extensions`), its CLI group (`frugalml <app> ...`) and an example."""
