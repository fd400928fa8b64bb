"""Training, one module per concern. `vit_finetune/train.py` is the command; read the loop first:

    loop.py           train(): set-up, the step, evaluation, checkpoints, export; the page to read first
    run.py            set_up(): accelerator, model, data loaders, optimizer, schedule, resumed state -> Run
    arguments.py      ModelArguments (ViTConfig's parameters), TrainingArguments, parse_train_arguments
    model.py          where the model comes from, its labels, normalisation and frozen backbone
    optim.py          build_optimizer (AdamW groups from the model's no_weight_decay / layer_id), the schedule
    sampling.py       EpochSampler and reseed_for_batch: batch order and randomness that survive a restart
    state.py          TrainerState (trainer_state.json) and resume(), which may change optimizer settings
    divergence.py     LossMeter (the loop's one host sync and NaN check), check_finite_weights, recovery advice
    checkpointing.py  atomic checkpoints, rotation, loading without unpickling, full-disk errors
    output_folder.py  one run per folder (the lock), fresh or resumed start, the staged model-folder swap
    export.py         the model folder: float32 metrics, metrics.json, plots, examples, model card
    devices.py        Accelerator arguments shared with `vit-finetune eval`

The package imports nothing here, so `vit-finetune eval` can use devices.py without loading the rest.
"""
