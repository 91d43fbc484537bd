"""lrexp's SLURM launcher for Hydra (``hydra/launcher=lrexp_slurm``): hydra-submitit-launcher's
SlurmLauncher, with lrexp's handling of the jobs SLURM stops (lrexp/sweep/slurm.py). Installed
as ``hydra_plugins.lrexp_slurm_launcher`` (pyproject's package-dir), because Hydra instantiates
launchers from the ``hydra_plugins`` namespace package only."""

from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as SubmititSlurmLauncher,
    )
except ImportError:  # without the [submitit] extra there is no SLURM launcher to offer
    SubmititSlurmLauncher = None

if SubmititSlurmLauncher is not None:

    class LrexpSlurmLauncher(SubmititSlurmLauncher):
        def __call__(self, *args: Any) -> Any:
            """One job, on a node."""
            from lrexp.sweep import slurm

            # zero-argument super: Hydra's plugin scan re-executes this module (another class)
            run = super().__call__
            return slurm.run_job(lambda: run(*args))

        def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
            """Submit the sweep's jobs and wait for them, in the sweep's parent."""
            from lrexp.sweep import slurm

            launch = super().launch
            with slurm.waiting_for_jobs(lambda job, error: slurm.lost_job(self, job, error)):
                return slurm.launch_jobs(self, lambda: launch(job_overrides, initial_job_idx),
                                         job_overrides, initial_job_idx)
