"""The dag.test() harness itself: retries, reruns, Variables, task_state_store, connections, PostgreSQL."""

from __future__ import annotations

import textwrap

import pytest

FLAKY_DAG = textwrap.dedent(
    '''
    import datetime as dt

    from airflow.sdk import DAG, Variable
    from airflow.providers.standard.operators.python import PythonOperator


    def flaky(**context):
        ti = context["ti"]
        store = context["task_state_store"]
        seen = store.get("tries_seen", [])
        store.set("tries_seen", seen + [ti.try_number])
        runs = Variable.get("harness_runs", default="0")
        if ti.try_number == 1:
            ti.xcom_push(key="from_failed_try", value="left behind")
            raise RuntimeError("first try always fails")
        Variable.set("harness_runs", str(int(runs) + 1))
        return {
            "try_number": ti.try_number,
            "tries_seen": seen + [ti.try_number],
            "runs_before": int(runs),
            "conf": dict(context["dag_run"].conf or {}),
        }


    with DAG("harness_flaky", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):
        PythonOperator(task_id="flaky", python_callable=flaky, retries=1, retry_delay=dt.timedelta(0))
    '''
)


def test_a_task_failing_its_first_try_succeeds_on_retry(dag_runner):
    result = dag_runner.run_dag(FLAKY_DAG, "harness_flaky", conf={"who": "test"})

    assert result.succeeded, result
    flaky = result.task("flaky")
    assert flaky.try_number == 2
    assert flaky.tries == ("failed", "success")
    assert flaky.return_value["try_number"] == 2
    assert flaky.return_value["conf"] == {"who": "test"}
    # Airflow wipes a task instance's XComs at the start of every try.
    assert "from_failed_try" not in flaky.xcoms


def test_variables_persist_across_runs_and_task_state_survives_only_the_retry(dag_runner):
    first = dag_runner.run_dag(FLAKY_DAG, "harness_flaky")
    second = dag_runner.run_dag(FLAKY_DAG, "harness_flaky")

    assert first.succeeded and second.succeeded, (first, second)
    assert first.run_id != second.run_id
    assert second.logical_date > first.logical_date
    # task_state_store: the retry saw what try 1 wrote; the next run started empty.
    assert first.return_value("flaky")["tries_seen"] == [1, 2]
    assert second.return_value("flaky")["tries_seen"] == [1, 2]
    # Variables: written by run 1, read by run 2.
    assert second.return_value("flaky")["runs_before"] == first.return_value("flaky")["runs_before"] + 1
    assert dag_runner.task_state("harness_flaky", second.run_id, "flaky") == {"tries_seen": [1, 2]}


FAILING_DAG = textwrap.dedent(
    '''
    import datetime as dt

    from airflow.sdk import DAG, task


    with DAG("harness_failing", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):

        @task(retries=0)
        def broken():
            raise ValueError("no retries left")

        @task
        def after(value):
            return value

        after(broken())
    '''
)


def test_a_failed_task_fails_the_run_without_raising(dag_runner):
    result = dag_runner.run_dag(FAILING_DAG, "harness_failing")

    assert result.state == "failed"
    assert result.task("broken").state == "failed"
    assert result.task("broken").tries == ("failed",)
    assert result.task("after").state == "upstream_failed"


RERUN_DAG = textwrap.dedent(
    '''
    import datetime as dt

    from airflow.sdk import DAG, task


    with DAG("harness_rerun", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):

        @task
        def remember(**context):
            ti = context["ti"]
            store = context["task_state_store"]
            executions = store.get("executions", 0) + 1
            store.set("executions", executions)
            earlier = ti.xcom_pull(task_ids=ti.task_id, key="marker", map_indexes=ti.map_index)
            ti.xcom_push(key="marker", value=ti.try_number)
            return {"executions": executions, "marker_seen": earlier, "try_number": ti.try_number}

        remember()
    '''
)


def test_clear_and_rerun_repeats_the_same_run_like_the_ui(dag_runner):
    first = dag_runner.run_dag(RERUN_DAG, "harness_rerun")
    dag_runner.run_dag(FAILING_DAG, "harness_failing")  # replaces the DAG file in the dags folder
    again = dag_runner.clear_and_rerun(first)

    assert first.succeeded and again.succeeded, (first, again)
    assert again.run_id == first.run_id
    assert again.return_value("remember") == {"executions": 2, "marker_seen": None, "try_number": 2}
    assert again.task("remember").tries == ("success", "success")


CONNECTION_DAG = textwrap.dedent(
    '''
    import datetime as dt

    from airflow.sdk import DAG, BaseHook, task


    with DAG("harness_connection", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):

        @task
        def read_connection():
            conn = BaseHook.get_connection("retl_harness_http")
            return {"type": conn.conn_type, "host": conn.host, "has_password": bool(conn.password),
                    "extra": conn.extra_dejson}

        read_connection()
    '''
)


def test_connections_from_environment_reach_tasks(dag_runner, set_connection):
    set_connection("retl_harness_http", "http", "http://127.0.0.1:9", password="t0ken", extra={"timeout": 5})

    result = dag_runner.run_dag(CONNECTION_DAG, "harness_connection")

    assert result.succeeded, result
    assert result.return_value("read_connection") == {
        "type": "http",
        "host": "http://127.0.0.1:9",
        "has_password": True,
        "extra": {"timeout": 5},
    }


def test_dag_file_errors_are_raised_with_the_traceback(dag_runner):
    with pytest.raises(RuntimeError, match="NameError"):
        dag_runner.run_dag("import datetime\nundefined_name\n", "harness_broken_file")


POSTGRES_DAG = textwrap.dedent(
    '''
    import datetime as dt

    from airflow.sdk import DAG, task


    with DAG("harness_postgres", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):

        @task
        def count_rows():
            from airflow.providers.postgres.hooks.postgres import PostgresHook

            hook = PostgresHook(postgres_conn_id="retl_harness_pg")
            return hook.get_records("select count(*), min(email) from contacts")[0]

        count_rows()
    '''
)


def test_postgres_schema_fixture_is_reachable_from_a_dag(dag_runner, pg_schema, set_connection):
    pg_schema.execute("create table contacts (id int primary key, email text)")
    pg_schema.execute("insert into contacts values (1, 'a@example.com'), (2, 'b@example.com')")
    set_connection("retl_harness_pg", "postgres", **pg_schema.connection_fields())

    result = dag_runner.run_dag(POSTGRES_DAG, "harness_postgres")

    assert result.succeeded, result
    assert result.return_value("count_rows") == (2, "a@example.com")


XCOM_TYPES_DAG = textwrap.dedent(
    '''
    import datetime as dt

    from airflow.sdk import DAG, task


    with DAG("harness_xcom_types", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False):

        @task
        def values(**context):
            ti = context["ti"]
            ti.xcom_push(key="text", value="123")
            ti.xcom_push(key="number", value=1.5)
            ti.xcom_push(key="nested", value={"a": [1, {"b": None}], "t": (1, 2)})
            return None

        values()
    '''
)


def test_xcoms_read_back_with_their_python_types(dag_runner):
    result = dag_runner.run_dag(XCOM_TYPES_DAG, "harness_xcom_types")

    xcoms = result.task("values").xcoms
    assert xcoms["text"] == "123"
    assert xcoms["number"] == 1.5
    assert xcoms["nested"] == {"a": [1, {"b": None}], "t": (1, 2)}
    assert result.return_value("values") is None
