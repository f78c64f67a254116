# Downloads, run on the submit host (compute nodes often have no internet), each writing its
# `.complete` marker last; generated ListOps files; and the wildcard-free targets a user asks
# for by name: `fetch` (all the config needs), `fetch_weights`, and one rule per dataset
# (fetch_mnist, ...: each downloads that dataset). The per-task map of required files is
# fpt.data.required_files.


localrules:
    fetch,
    fetch_weights,
    download_weights,
    fetch_mnist,
    fetch_cifar10,
    fetch_listops,
    fetch_homology,
    make_listops,


rule fetch:
    """Everything the config's runs need from the internet or the ListOps generator:
    pretrained weights, datasets, generated ListOps (run it on a machine with internet).
    """
    input:
        config_weights(),
        config_data(),


rule fetch_weights:
    """Every pretrained weights folder the config's runs need."""
    input:
        config_weights(),


rule download_weights:
    """One backbone size's pretrained weights (hub download into WEIGHTS/<local name>)."""
    output:
        f"{WEIGHTS}/{{weights}}/config.json",
    log:
        f"{RESULTS}/logs/download_weights/{{weights}}.log",
    conda:
        "../envs/fpt.yaml"
    params:
        args=lambda w: fetch_args(w.weights),
        weights_dir=lambda w: WEIGHTS,
    shell:
        "python -m fpt fetch-weights {params.args} --weights-dir {params.weights_dir} > {log} 2>&1"


rule fetch_mnist:
    """MNIST idx files from torchvision's mirrors, md5-checked (DATA/MNIST/raw)."""
    output:
        dataset_marker("mnist"),
    log:
        f"{RESULTS}/logs/fetch_data/mnist.log",
    conda:
        "../envs/fpt.yaml"
    params:
        data_dir=lambda w: DATA,
    shell:
        "python -m fpt fetch-data mnist --data-dir {params.data_dir} > {log} 2>&1"


rule fetch_cifar10:
    """CIFAR-10 python pickles, md5-checked (DATA/cifar-10-batches-py); also cifar10_lra."""
    output:
        dataset_marker("cifar10"),
    log:
        f"{RESULTS}/logs/fetch_data/cifar10.log",
    conda:
        "../envs/fpt.yaml"
    params:
        data_dir=lambda w: DATA,
    shell:
        "python -m fpt fetch-data cifar10 --data-dir {params.data_dir} > {log} 2>&1"


rule fetch_listops:
    """LRA's ListOps TSVs from lra_release.gz (7.7 GB download; only listops-1000 is kept)."""
    output:
        dataset_marker("listops"),
    log:
        f"{RESULTS}/logs/fetch_data/listops.log",
    conda:
        "../envs/fpt.yaml"
    params:
        data_dir=lambda w: DATA,
    shell:
        "python -m fpt fetch-data listops --data-dir {params.data_dir} > {log} 2>&1"


rule fetch_homology:
    """TAPE remote homology LMDBs, md5-checked (DATA/remote_homology)."""
    output:
        dataset_marker("homology"),
    log:
        f"{RESULTS}/logs/fetch_data/homology.log",
    conda:
        "../envs/fpt.yaml"
    params:
        data_dir=lambda w: DATA,
    shell:
        "python -m fpt fetch-data homology --data-dir {params.data_dir} > {log} 2>&1"


rule make_listops:
    """Generated ListOps in LRA's format (offline); the folder name encodes every parameter."""
    output:
        f"{DATA}/listops-generated/{{listops}}/.complete",
    log:
        f"{RESULTS}/logs/make_listops/{{listops}}.log",
    conda:
        "../envs/fpt.yaml"
    params:
        data_dir=lambda w: DATA,
    shell:
        "python -m fpt make-listops --from-name {wildcards.listops} --data-dir {params.data_dir} > {log} 2>&1"
