"""Data sets to pretrain and evaluate on: the synthetic motion benchmark and Kinetics subsets."""
