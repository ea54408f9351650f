"""``airflow retl ...``: the provider's commands, as Airflow 3 loads them.

Airflow's CLI parser calls every function named in the provider info's ``cli`` list
(``ProvidersManager.cli_command_functions``) and adds the commands it returns. This
module must import fast and import nothing of ours beyond it: it runs for every
``airflow`` invocation. Each command's work lives in ``commands.py`` and is imported only
when that command runs (``lazy_load_command``).

To add a subcommand, append an ``ActionCommand`` to ``RETL_COMMANDS``.
"""

from __future__ import annotations

from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand, lazy_load_command

ARG_CONN_ID = Arg(("conn_id",), help="Connection id of a Reverse ETL destination (retl_* connection type)")

ARG_DAG_ID = Arg(("dag_id",), help="The DAG of the sync")
ARG_TASK_ID = Arg(("task_id",), help="The ReverseETLOperator task of the sync")
ARG_RUN_ID = Arg(("--run-id",), help="The DAG run (default: the DAG's latest run)")

#: The subcommands of ``airflow retl``.
RETL_COMMANDS: list[ActionCommand] = [
    ActionCommand(
        name="test",
        help="Test a destination connection: one cheap authenticated read that writes nothing",
        description=(
            "Looks the connection up like a task would (environment variables, secrets backends, "
            "the metadata DB), builds its hook and calls the hook's test_connection(). Prints the "
            "result and exits 1 on failure; secrets are never printed. Unlike the connection "
            "form's Test button this needs no '[core] test_connection = Enabled': it runs where "
            "you run it, with your rights."
        ),
        func=lazy_load_command("airflow_provider_retl.cli.commands.test_connection"),
        args=(ARG_CONN_ID,),
    ),
    ActionCommand(
        name="replay",
        help="Replay a sync's rejects now: run its task again in the DAG's latest run (or --run-id)",
        description=(
            "Clears the sync's task instance (every map index) so the scheduler runs it again; rejected "
            "rows are never checkpointed, so the new try sends every row not yet synced (the rejects, "
            "and whatever changed since) and nothing else. A running or queued try is left alone."
        ),
        func=lazy_load_command("airflow_provider_retl.cli.commands.replay"),
        args=(ARG_DAG_ID, ARG_TASK_ID, ARG_RUN_ID),
    ),
]


def get_retl_cli_commands() -> list[GroupCommand]:
    """The ``retl`` command group; the provider info's ``cli`` key names this function."""
    return [
        GroupCommand(
            name="retl",
            help="Reverse ETL provider commands",
            subcommands=RETL_COMMANDS,
        )
    ]
