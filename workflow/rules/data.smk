# Downloads, run on the submit host (compute nodes often have no internet), each writing its
# `.complete` marker last; generated ListOps files; and the wildcard-free targets a user asks
# for by name: `fetch` (all the config needs), `fetch_weights`, and fetch_<dataset> for every
# dataset the tasks declare (fetch_mnist, ...). One rule, fetch_data, downloads any dataset:
# the datasets and the files each run needs come from the task modules (fpt.data.DATASETS,
# fpt.tasks.required_files), a config's own `task_modules` included.


localrules:
    fetch,
    fetch_weights,
    download_weights,
    fetch_data,
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


rule fetch_data:
    """One dataset, downloaded and checked by the fetch function its task module declares
    (`fpt fetch-data`); the output's folder names the dataset (fpt.data.DATASETS)."""
    output:
        f"{DATA}/{{dataset_folder}}/.complete",
    log:
        f"{RESULTS}/logs/fetch_data/{{dataset_folder}}.log",
    conda:
        "../envs/fpt.yaml"
    params:
        dataset=fetch_dataset,
        data_dir=lambda w: DATA,
    shell:
        "python -m fpt fetch-data {params.dataset} --data-dir {params.data_dir} > {log} 2>&1"


# fetch_mnist, fetch_cifar10, ...: one dataset by name (`snakemake fetch_mnist`).
for _dataset in DATASETS:

    rule:
        name:
            f"fetch_{_dataset}"
        input:
            dataset_marker(_dataset),
        localrule: True


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
