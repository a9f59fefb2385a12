"""The coverage principle for compositional generalization: multi-hop tasks (compositional),
exact k-coverage of a training set (k_coverage) and the experiment that splits generalization
by it (experiment). See README.md."""
