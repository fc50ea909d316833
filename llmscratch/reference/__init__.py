"""Independent reference implementations (plain PyTorch with autograd) that the tests and benchmarks compare
llmscratch against. Importing this package needs torch."""
