"""What the workflow plans, as plain Python: the config's cross-checks, the names of model
variants, where each artifact lives, the command-line flags of a job and the code each stage
depends on. ``workflow/rules/common.smk`` imports these while Snakemake parses the workflow;
living here, they are tested like the rest of the package, and the stages and ``inspect`` share
them."""
