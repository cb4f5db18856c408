"""The text/event-stream parser, line by line, against the standard's rules."""
from nexa_forge import ServerSentEvent
from nexa_forge._sse import SSEDecoder, iter_sse_lines


def parse(text):
    return list(iter_sse_lines(text.splitlines(keepends=True)))


def test_one_event_with_type_id_and_json_data():
    [ev] = parse('event: forge.job.running\nid: 7\ndata: {"status": "running"}\n\n')
    assert ev == ServerSentEvent("forge.job.running", '{"status": "running"}', "7", None)
    assert ev.json() == {"status": "running"}


def test_multiline_data_is_joined_with_newlines():
    [ev] = parse("data: first\ndata: second\ndata:third\n\n")
    assert ev.data == "first\nsecond\nthird"
    assert ev.event == "message"


def test_only_one_leading_space_is_stripped():
    [ev] = parse("data:   indented\n\n")
    assert ev.data == "  indented"


def test_comments_and_unknown_fields_are_ignored():
    evs = parse(": keep-alive\n\n: another\nfoo: bar\ndata: x\n\n")
    assert [e.data for e in evs] == ["x"]


def test_event_without_data_is_not_dispatched_but_its_id_counts():
    dec = SSEDecoder()
    evs = list(iter_sse_lines(["id: 5\n", "event: ping\n", "\n", "data: y\n", "\n"], dec))
    assert len(evs) == 1
    assert evs[0].event == "message", "the type of the dropped event does not leak"
    assert evs[0].id == "5" and dec.last_event_id == "5"


def test_id_persists_and_empty_id_resets():
    evs = parse("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n")
    assert [e.id for e in evs] == ["1", "1", ""]


def test_id_with_nul_is_ignored():
    evs = parse("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n")
    assert [e.id for e in evs] == ["1", "1"]


def test_retry_sets_reconnection_delay_only_when_digits():
    dec = SSEDecoder()
    list(iter_sse_lines(["retry: 2500\n", "retry: soon\n", "data: a\n", "\n"], dec))
    assert dec.retry == 2500


def test_field_without_colon_counts_with_empty_value():
    [ev] = parse("data\n\n")
    assert ev.data == ""


def test_crlf_and_bare_cr_line_endings():
    assert [e.data for e in parse("data: a\r\n\r\ndata: b\r\n\r\n")] == ["a", "b"]
    evs = list(iter_sse_lines(["data: a\r\rdata: b\r\r"]))
    assert [e.data for e in evs] == ["a", "b"]


def test_byte_order_mark_at_start_is_skipped():
    [ev] = parse("\ufeffdata: a\n\n")
    assert ev.data == "a"


def test_unfinished_event_at_end_is_dropped():
    assert [e.data for e in parse("data: a\n\ndata: cut")] == ["a"]


def test_value_may_contain_colons():
    [ev] = parse('data: {"a": "b:c"}\n\n')
    assert ev.json() == {"a": "b:c"}
