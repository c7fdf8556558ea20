"""``--events`` and ``triage --events`` on the command line: parsed by the one flag table,
completed and validated before any API call, turned into the agent's ``events`` query."""

from __future__ import annotations

import pytest
from sockdebug_agent.query import Query
from sockdebug_plugin import cli, complete, flags, options
from sockdebug_plugin.errors import UsageError


def built(*argv: str) -> options.Options:
    opts = options.build(flags.parse(list(argv)))
    opts.validate()
    return opts


def test_events_builds_the_agents_query_with_the_default_duration():
    opts = built("pod/api", "--events", "-t", "dport", "=", ":443")
    assert isinstance(opts, options.InspectOptions) and opts.events
    (query,) = opts.queries()
    assert query.to_argv() == ["events", "-t", "-p", "--for", flags.EVENTS_FOR, "dport", "=", ":443"]
    assert Query.from_argv(query.to_argv()) == query  # the agent reads back what the plugin asks


def test_for_and_count_are_passed_on():
    (query,) = built("deploy/api", "--events", "--for=2m", "--count", "50", "-P").queries()
    assert (query.duration, query.count, query.flags.processes) == ("2m", 50, False)


@pytest.mark.parametrize(("argv", "says"), [
    (["pod/api", "--for", "30s"], "go with --events"),
    (["pod/api", "--count", "3"], "go with --events"),
    (["pod/api", "--events", "-s"], "takes no --watch, -s"),
    (["pod/api", "--events", "--watch"], "takes no --watch"),
    (["pod/api", "--events", "--listening"], "takes no -l"),
    (["pod/api", "--events", "-x"], "takes no -x"),
    (["pod/api", "--events", "--for", "soon"], "--for"),
    (["pod/api", "--events", "--count", "0"], "--count"),
    (["triage", "pod/api", "--events", "0s"], "--events must be more than 0"),
    (["triage", "pod/api", "--events", "later"], "--events"),
    (["pod/api", "--events", "--sort-by=.close"], "--sort-by cannot sort them"),  # the table streams
    (["pod/api", "--events", "-o", "wide", "--sort-by=.close"], "--sort-by cannot sort them"),
])
def test_bad_combinations_are_usage_errors_before_any_api_call(argv, says):
    with pytest.raises(UsageError) as caught:
        built(*argv)
    assert says in caught.value.cause


def test_triage_takes_a_duration():
    opts = built("triage", "pod/api", "--events", "10s")
    assert isinstance(opts, options.TriageOptions) and opts.events == "10s"


def test_a_usage_error_exits_2_without_the_cluster(capsys):
    assert cli.main(["pod/api", "--events", "--for", "-1s"]) == 2
    assert "error: --for" in capsys.readouterr().err


def test_completion_offers_the_new_flags():
    assert "--events" in complete.candidates(["pod/api", "--ev"])
    assert {"--for", "--count"} <= set(complete.candidates(["pod/api", "--"]))
    assert "--events" in complete.candidates(["triage", "pod/api", "--ev"])
