#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_ctl.c: well-formed requests and answers of every kind
(include/kfwd/ctl.h), so the fuzzer starts from messages that reach deep into the parser.

usage: seeds_ctl.py DIR
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ctlproto as P  # noqa: E402


def msg_raw(length, t):
    return struct.pack("=IHHII", length, t, P.F_REQUEST, 1, 0)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    v = P.u32(P.A_VERSION, P.VERSION)
    seeds = {
        "status": P.msg(P.CMD_STATUS, P.F_REQUEST, 1, v),
        "conn_list_cursor": P.msg(P.CMD_CONN_LIST, P.F_REQUEST | P.F_DUMP, 2, v + P.u64(P.A_CURSOR, 99)),
        "conn_kill": P.msg(P.CMD_CONN_KILL, P.F_REQUEST | P.F_ACK, 3, v + P.u64(P.A_CONN_ID, 7)),
        "route_add": P.msg(P.CMD_ROUTE_ADD, P.F_REQUEST | P.F_ACK, 4,
                           v + P.strz(P.A_PREFIX, "/api/") + P.strz(P.A_TARGET, "backend")
                           + P.nest(P.A_OPTIONS, P.strz(P.A_OPTION, "strip-prefix") + P.strz(P.A_OPTION, "host=a.example"))),
        "route_del": P.msg(P.CMD_ROUTE_DEL, P.F_REQUEST | P.F_ACK, 5, v + P.strz(P.A_PREFIX, "/api/") + P.strz(P.A_HOST, "")),
        "set": P.msg(P.CMD_SET, P.F_REQUEST | P.F_ACK, 6,
                     v + P.nest(P.A_SETTINGS, P.nest(P.A_SETTING, P.strz(P.SET_KEY, "pipe-size") + P.strz(P.SET_VALUE, "64k"))
                                + P.nest(P.A_SETTING, P.strz(P.SET_KEY, "log-level") + P.strz(P.SET_VALUE, "debug")))),
        "drain": P.msg(P.CMD_UPSTREAM_DRAIN, P.F_REQUEST | P.F_ACK, 7, v + P.strz(P.A_UPSTREAM, "u") + P.strz(P.A_SERVER, "127.0.0.1:80")),
        "two_msgs": P.msg(P.CMD_STATS, P.F_REQUEST, 8, v) + P.msg(P.CMD_RELOAD, P.F_REQUEST, 9, v),
        "ack_msg": P.error_msg(0, P.msg(P.CMD_RELOAD, P.F_REQUEST, 9, v), "3 open connections keep the previous configuration"),
        "error_offs": P.error_msg(-22, P.msg(P.CMD_SET, P.F_REQUEST, 6, v), "bad value", offset=20),
        "done_cursor": P.done_msg(10, v + P.u64(P.A_CURSOR, 1234)),
        "conn_reply": P.msg(P.CMD_CONN_LIST, P.F_MULTI, 2, v + P.nest(P.A_CONN,
                            P.u64(P.CONN_ID, 5) + P.strz(P.CONN_CLIENT, "127.0.0.1:5555") + P.strz(P.CONN_STATE, "exchange")
                            + P.nest(P.CONN_REQ, P.strz(P.FLOW_PATH, "splice") + P.u64(P.FLOW_BYTES, 10) + P.u8(P.FLOW_PAUSED, 1))
                            + P.nest(P.CONN_RESP, P.u64(P.FLOW_QUEUED, 1 << 20)))),
        "status_reply": P.msg(P.CMD_STATUS, 0, 1, v + P.nest(P.A_STATUS,
                              P.strz(P.ST_VERSION, "0.1") + P.strz(P.ST_LISTEN, "127.0.0.1:8080") + P.strz(P.ST_LISTEN, "[::1]:8080")
                              + P.nest(P.ST_DATAPATH, P.strz(P.DP_NAME, "splice") + P.u8(P.DP_AVAILABLE, 1)))),
        "event": P.msg(P.CMD_EVENT, 0, 11, v + P.nest(P.A_EVENT, P.u32(P.EV_TYPE, 3) + P.u64(P.EV_CONN_ID, 5)
                                                        + P.strz(P.EV_DIR, "response") + P.u64(P.EV_LOST, 2))),
        # Regression: nlmsg_len 0xffffffff passed mnl_nlmsg_ok() as (int)-1 and looped forever.
        "nlmsg_len_max": msg_raw(0xFFFFFFFF, P.CMD_STATUS) + b"\xff" * 8,
        "unknown_attr": P.msg(P.CMD_STATUS, P.F_REQUEST, 12, v + P.attr(200, b"\x01\x02\x03") + P.nest(201, P.u32(1, 1))),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
