"""Development tools for kuberunner, used from a source checkout only: the local cluster
(`kuberunner dev cluster`) and the demo (`kuberunner dev demo`).

This package is not part of the `kuberunner` wheel or of any image; `make setup` installs it
(editable) from `devtools/`, and it adds the `dev` command group through the
`kuberunner.commands` entry point.
"""
