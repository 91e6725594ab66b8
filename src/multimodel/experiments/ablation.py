"""RQ3 (paper Table 4): do the mixture-of-experts layers and the attention blocks matter?

Arms, all trained jointly on ``data.tasks`` for ``train.steps`` steps with the same seeds (so
every task gets the same steps in every arm): ``full``; ``no-moe`` (``model.use_moe=false``: the
MoE layers removed); ``no-attention`` (``model.use_attention=false``). The paper found that
removing either never helps; both matter for translation, and they help ImageNet slightly.
Every arm runs the same steps, so their learning-rate schedules are equal whatever ``schedule``.
"""

from __future__ import annotations

from multimodel.config import Config, ConfigError
from multimodel.experiments.grid import Arm, Plan, check_schedule, make_spec, seeded, with_tasks

QUESTION = ("Does removing the mixture-of-experts layers or the attention blocks hurt (RQ3)?"
            " Paper, Table 4: removing either never helps; on translation both matter.")

ARMS = (("full", ()), ("no-moe", ("model.use_moe=false",)), ("no-attention", ("model.use_attention=false",)))


def plan(cfg: Config, seeds: int, *, schedule: str = "matched", vary_data_seed: bool = True) -> Plan:
    check_schedule(schedule)  # accepted for a uniform interface: equal steps, equal schedules
    if not (cfg.model.use_moe and cfg.model.use_attention):
        raise ConfigError("the ablation's 'full' arm needs model.use_moe=true and model.use_attention=true")
    tasks = tuple(cfg.data.tasks)
    specs = []
    for i in range(seeds):
        base = seeded(cfg, i, vary_data_seed=vary_data_seed)
        for name, overrides in ARMS:
            arm = Arm(name, name, tasks, overrides)
            specs.append(make_spec(arm, i, with_tasks(base, tasks, overrides=overrides)))
    notes = [f"every arm: {cfg.train.steps} steps on the same task schedule (same seeds, same mixing),"
             " so each task gets the same number of steps in every arm."]
    return Plan("ablation", "Ablation of the MoE layers and attention blocks (RQ3; paper Table 4)",
                QUESTION, specs, [a for a, _ in ARMS], list(tasks), notes)
