"""multimodel: MultiModel ("One Model To Learn Them All", Kaiser et al. 2017) in PyTorch."""

__version__ = "0.1.0"
