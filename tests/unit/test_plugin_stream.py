"""The plugin's JSON Lines reader: records out of arbitrary byte chunks, and framing
errors (no hello, no end, garbage, data after the end) that say what was received."""

from __future__ import annotations

import json
import random

import pytest
from sockdebug_agent.schema import SCHEMA_VERSION, End, Error, Hello, Socket, Summary, Warning, to_json
from sockdebug_plugin.errors import EXIT_AGENT, AgentError
from sockdebug_plugin.stream import StreamReader

SOURCE = "agent sockdebug-abc123 in pod/api"


def hello(schema_version=SCHEMA_VERSION, agent_version="0.1.0"):
    return Hello(schema_version, agent_version, ["sockets", "-tlp"], "6.1.0", "api-0", "linux", 4026531840,
                 4026531836, 0)


def end(records=None, exit_code=0):
    return End(records or {}, 12.5, exit_code)


def sock(i, comm="app"):
    return Socket("inet", "tcp", "LISTEN", 0, 128, "0.0.0.0", 8000 + i, "0.0.0.0", 0, None, 1000 + i, 0, 77 + i,
                  None, [{"pid": 10 + i, "comm": comm, "fd": 3, "container_id": "a" * 64}])


def stream_bytes(records) -> bytes:
    return b"".join(to_json(r).encode() + b"\n" for r in records)


RECORDS = [hello(), *(sock(i) for i in range(50)), Warning("proc_unreadable", "pid 7: permission denied", 1),
           Summary(10, 5, 3, 0, 0, 1, {"TCP": {"total": 5, "ipv4": 4, "ipv6": 1}}, {"LISTEN": 2}, 1, 4),
           end({"socket": 50, "warning": 1, "summary": 1})]
DATA = stream_bytes(RECORDS)


def read_all(chunks) -> tuple[StreamReader, list]:
    reader = StreamReader(SOURCE)
    out = []
    for chunk in chunks:
        out += reader.feed(chunk)
    reader.close()
    return reader, out


def split_at(data: bytes, sizes) -> list[bytes]:
    chunks, i = [], 0
    for n in sizes:
        if i >= len(data):
            break
        chunks.append(data[i:i + n])
        i += n
    if i < len(data):
        chunks.append(data[i:])
    return chunks


def check(reader: StreamReader, out: list) -> None:
    assert out == RECORDS
    assert [type(r) for r in out[:2]] == [Hello, Socket]
    assert reader.hello == RECORDS[0] and reader.end == RECORDS[-1] and reader.error is None
    assert reader.counts == {"hello": 1, "socket": 50, "warning": 1, "summary": 1, "end": 1}


def test_whole_stream_in_one_chunk():
    check(*read_all([DATA]))


def test_one_byte_at_a_time():
    check(*read_all([DATA[i:i + 1] for i in range(len(DATA))]))


@pytest.mark.parametrize("seed", range(20))
def test_random_chunk_sizes(seed):
    rng = random.Random(seed)
    sizes = [rng.choice((1, 2, 3, 7, 64, 200, 1000, 4096, 65536)) for _ in range(len(DATA))]
    check(*read_all(split_at(DATA, sizes)))


def test_records_arrive_as_soon_as_their_line_is_complete():
    lines = DATA.splitlines(keepends=True)
    reader = StreamReader(SOURCE)
    assert reader.feed(lines[0][:10]) == []
    assert reader.feed(lines[0][10:-1]) == []  # everything but the newline
    assert reader.feed(b"\n" + lines[1][:5]) == [RECORDS[0]]
    assert reader.feed(lines[1][5:] + lines[2] + lines[3]) == RECORDS[1:4]
    assert reader.feed(b"") == []


def test_split_inside_a_multibyte_character():
    records = [hello(), sock(0, comm="nginx·wörker→"), end()]
    data = stream_bytes(records)
    data = data.replace(b"\\u00b7", "·".encode()).replace(b"\\u00f6", "ö".encode())  # raw UTF-8 on the wire
    at = data.index("ö".encode()) + 1
    _reader, out = read_all([data[:at], data[at:]])
    assert out[1].processes[0]["comm"] == "nginx·wörker→"


def test_blank_lines_and_crlf_are_tolerated():
    data = DATA.replace(b"\n", b"\r\n", 3) + b"\n\n"
    check(*read_all([b"\n", data]))


def test_last_line_without_newline_is_read_at_close():
    reader = StreamReader(SOURCE)
    out = reader.feed(DATA[:-1])
    assert out == RECORDS[:-1] and reader.end is None
    reader.close()
    assert reader.end == RECORDS[-1]


# --- broken streams ---------------------------------------------------------------------------

def test_truncated_stream_names_what_was_received():
    cut = DATA.index(b'{"type":"warning"')
    reader = StreamReader(SOURCE)
    reader.feed(DATA[:cut])
    with pytest.raises(AgentError) as err:
        reader.close()
    assert err.value.cause == (f"{SOURCE}: the agent's stream broke off before its end record "
                               "(received 1 hello, 50 socket)")
    assert "kubectl logs" in err.value.hint
    assert err.value.exit_code == EXIT_AGENT


def test_truncated_mid_line_is_a_truncation_not_garbage():
    cut = DATA.index(b'{"type":"summary"') + 20
    reader = StreamReader(SOURCE)
    reader.feed(DATA[:cut])
    with pytest.raises(AgentError) as err:
        reader.close()
    assert err.value.cause == (f"{SOURCE}: the agent's stream broke off before its end record (received "
                               '1 hello, 50 socket, 1 warning, then a cut-off line: {"type":"summary","s)')
    assert "killed" in err.value.hint and "--image" not in err.value.hint


def test_only_a_cut_off_line():
    reader = StreamReader(SOURCE)
    reader.feed(b'{"type":"hel')
    with pytest.raises(AgentError, match=r'\(received nothing, then a cut-off line: \{"type":"hel\)$'):
        reader.close()


def test_complete_record_without_newline_before_hello_is_still_a_framing_error():
    reader = StreamReader(SOURCE)
    reader.feed(to_json(sock(0)).encode())
    with pytest.raises(AgentError, match="did not start with a hello record"):
        reader.close()


def test_empty_stream():
    reader = StreamReader(SOURCE)
    with pytest.raises(AgentError, match=r"broke off before its end record \(received nothing\)"):
        reader.close()


def test_hello_only():
    reader = StreamReader(SOURCE)
    reader.feed(stream_bytes([hello()]))
    with pytest.raises(AgentError, match=r"\(received 1 hello\)$"):
        reader.close()


@pytest.mark.parametrize(("line", "excerpt"), [
    (b"exec /usr/local/bin/sockdebug-agent: exec format error", "exec /usr/local/bin/sockdebug-agent: exec format"),
    (b"\x1b[31mpanic\x1b[0m: boom\x07", "\\x1b[31mpanic\\x1b[0m: boom\\x07"),
    (b"\xff\xfe garbage", "\ufffd\ufffd garbage"),
    (b'{"type": "socket", "family": "inet"', '{"type": "socket", "family": "inet"'),
    (b"[1, 2, 3]", "[1, 2, 3]"),
    (b'{"type": "socket"}', '{"type": "socket"}'),
])
def test_garbage_line_is_named_with_an_escaped_excerpt(line, excerpt):
    reader = StreamReader(SOURCE)
    reader.feed(stream_bytes([hello(), sock(1)]))
    with pytest.raises(AgentError) as err:
        reader.feed(line + b"\n")
    cause = err.value.cause
    assert cause.startswith(f"{SOURCE}: line 3 is not an agent record (")
    assert cause.endswith(excerpt) or excerpt in cause
    assert "\x1b" not in cause and "\x07" not in cause
    assert "--image" in err.value.hint


def test_unknown_record_types_from_newer_agents_are_skipped_and_counted():
    reader = StreamReader(SOURCE)
    records = reader.feed(stream_bytes([hello(), sock(1)]) + b'{"type": "bogus", "x": 1}\n')
    assert [r.type for r in records] == ["hello", "socket"]
    assert reader.counts["unknown"] == 1


def test_garbage_excerpt_is_cut_short():
    reader = StreamReader(SOURCE)
    reader.feed(stream_bytes([hello()]))
    with pytest.raises(AgentError) as err:
        reader.feed(b"x" * 5000 + b"\n")
    assert err.value.cause.endswith("x" * 120 + "…")
    assert len(err.value.cause) < 400


def test_garbage_before_hello():
    reader = StreamReader(SOURCE)
    with pytest.raises(AgentError, match="line 1 is not an agent record"):
        reader.feed(b"Error: failed to create containerd task\n" + DATA)


@pytest.mark.parametrize("first", [sock(0), end(), Warning("x", "y"), Error("fatal", "no")])
def test_first_record_must_be_hello(first):
    reader = StreamReader(SOURCE)
    with pytest.raises(AgentError) as err:
        reader.feed(stream_bytes([first, hello(), end()]))
    assert err.value.cause == f"{SOURCE}: the stream did not start with a hello record (got {first.type})"


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1, 99])
def test_schema_version_mismatch(version):
    reader = StreamReader(SOURCE)
    with pytest.raises(AgentError) as err:
        reader.feed(stream_bytes([hello(schema_version=version, agent_version="9.9.9")]))
    assert err.value.cause == (f"{SOURCE}: agent 9.9.9 speaks schema {version}, this plugin schema "
                               f"{SCHEMA_VERSION}")
    assert "--image" in err.value.hint


def test_newer_agent_fields_are_ignored():
    data = json.loads(to_json(hello()))
    data["new_field"] = {"x": 1}
    reader = StreamReader(SOURCE)
    assert reader.feed(json.dumps(data).encode() + b"\n") == [hello()]


def test_data_after_end():
    reader = StreamReader(SOURCE)
    reader.feed(DATA)
    with pytest.raises(AgentError) as err:
        reader.feed(b"trailing \x1b[2Jnoise\n")
    assert err.value.cause == f"{SOURCE}: data after the end record (line 55: trailing \\x1b[2Jnoise)"
    assert "entrypoint" in err.value.hint


def test_a_second_stream_after_end_is_rejected():
    reader = StreamReader(SOURCE)
    with pytest.raises(AgentError, match="data after the end record"):
        reader.feed(DATA + DATA)


def test_trailing_text_without_newline_after_end_is_caught_at_close():
    reader = StreamReader(SOURCE)
    reader.feed(DATA + b"Killed")
    with pytest.raises(AgentError, match=r"data after the end record \(line 55: Killed\)"):
        reader.close()


def test_error_record_is_captured():
    records = [hello(), Warning("partial", "some sockets missing"), Error("netlink", "NETLINK_SOCK_DIAG refused",
                                                                          "run with --profile netadmin"),
               end({"warning": 1, "error": 1}, exit_code=6)]
    reader, out = read_all([stream_bytes(records)])
    assert out == records
    assert reader.error == Error("netlink", "NETLINK_SOCK_DIAG refused", "run with --profile netadmin")
    assert reader.end.exit_code == 6
    assert reader.counts["error"] == 1 and reader.counts["warning"] == 1
