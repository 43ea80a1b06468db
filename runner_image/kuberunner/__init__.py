"""kuberunner: BentoML-style runners (Runnable, Runner, Strategy), Kubernetes-native."""

__version__ = "0.1.0"
