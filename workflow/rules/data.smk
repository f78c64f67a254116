# Datasets: one download rule per dataset (run on the submit host: compute nodes often have
# no internet), each writing its `.complete` marker last; generated ListOps files; and the
# train rule's input function. The per-task map of required files is fpt.data.required_files.
from fpt.data import DATASETS, required_files

DATA = config["data_dir"]


localrules:
    fetch_mnist,
    fetch_cifar10,
    fetch_listops,
    fetch_homology,
    make_listops,


def data_input(wildcards):
    """A run waits for its dataset's marker (or its generated ListOps files); the bit tasks
    and digits need nothing."""
    spec = GRID.runs[wildcards.run]
    return required_files(spec.task, spec.options, DATA)


rule fetch_mnist:
    """MNIST idx files from torchvision's mirrors, md5-checked (DATA/MNIST/raw)."""
    output:
        str(DATASETS["mnist"].marker(DATA)),
    log:
        f"{RESULTS}/logs/fetch_data/mnist.log",
    shell:
        "python -m fpt fetch-data mnist --data-dir {DATA} > {log} 2>&1"


rule fetch_cifar10:
    """CIFAR-10 python pickles, md5-checked (DATA/cifar-10-batches-py); also cifar10_lra."""
    output:
        str(DATASETS["cifar10"].marker(DATA)),
    log:
        f"{RESULTS}/logs/fetch_data/cifar10.log",
    shell:
        "python -m fpt fetch-data cifar10 --data-dir {DATA} > {log} 2>&1"


rule fetch_listops:
    """LRA's ListOps TSVs from lra_release.gz (7.7 GB download; only listops-1000 is kept)."""
    output:
        str(DATASETS["listops"].marker(DATA)),
    log:
        f"{RESULTS}/logs/fetch_data/listops.log",
    shell:
        "python -m fpt fetch-data listops --data-dir {DATA} > {log} 2>&1"


rule fetch_homology:
    """TAPE remote homology LMDBs, md5-checked (DATA/remote_homology)."""
    output:
        str(DATASETS["homology"].marker(DATA)),
    log:
        f"{RESULTS}/logs/fetch_data/homology.log",
    shell:
        "python -m fpt fetch-data homology --data-dir {DATA} > {log} 2>&1"


rule make_listops:
    """Generated ListOps in LRA's format (offline); the folder name encodes every parameter."""
    output:
        f"{DATA}/listops-generated/{{name}}/.complete",
    log:
        f"{RESULTS}/logs/make_listops/{{name}}.log",
    wildcard_constraints:
        name=r"len\d+-\d+_depth\d+_args\d+_n\d+-\d+-\d+_seed\d+",
    shell:
        "python -m fpt make-listops --from-name {wildcards.name} --data-dir {DATA} > {log} 2>&1"
