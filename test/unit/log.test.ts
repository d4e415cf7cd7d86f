/**
 * Log lines as an operator reads them: JSON for machines, one readable line per event on a
 * terminal, the error text under `error` (not glued onto the message), stacks of expected
 * conditions only at debug level; and the first lines naming the device and its topics.
 */
import assert from "node:assert/strict";
import {Writable} from "node:stream";
import {describe, it} from "node:test";
import {startupLines} from "../../src/cli/startup-lines.js";
import {loadConfig} from "../../src/config.js";
import {describeError, ModelUnavailableError, shortReason} from "../../src/errors.js";
import {createLogger, renderPretty, type LogFormat} from "../../src/log.js";

/** A stream that keeps what it is given; `tty` makes it look like a terminal. */
function capture(tty = false): {stream: Writable & {isTTY?: boolean}; text: () => string} {
    let text = "";
    const stream: Writable & {isTTY?: boolean} = new Writable({
        write(chunk: Buffer, _encoding, callback): void {
            text += chunk.toString("utf8");
            callback();
        }
    });
    if (tty) stream.isTTY = true;
    return {stream, text: () => text};
}

function logOnce(level: string, format: LogFormat, tty: boolean, write: (log: ReturnType<typeof createLogger>) => void): string {
    const {stream, text} = capture(tty);
    write(createLogger(level, stream, format));
    return text();
}

const OFFLINE = new ModelUnavailableError("no model file: place Qwen3.5-0.8B-Q4_K_M.gguf in /var/cache/qwen-edge/models or allow downloads");

void describe("log lines", () => {
    void it("json: one object per line, the error's text under `error`, not appended to the message", () => {
        const out = logOnce("info", "json", false, (log) => log.error("model failed to load", describeError(OFFLINE)));
        const lines = out.trim().split("\n");
        assert.equal(lines.length, 1);
        const line = JSON.parse(lines[0]!) as Record<string, unknown>;
        assert.equal(line.message, "model failed to load");
        assert.equal(line.error, OFFLINE.message);
        assert.equal(line.code, "model_unavailable");
        assert.equal(line.level, "error");
    });

    void it("shows the stack of an expected condition only at debug level, an unexpected error's always", () => {
        const info = JSON.parse(logOnce("info", "json", false, (log) => log.warn("x", describeError(OFFLINE)))) as Record<string, unknown>;
        assert.equal("stack" in info, false, "no stack for a ModelUnavailableError at info");
        const debug = JSON.parse(logOnce("debug", "json", false, (log) => log.warn("x", describeError(OFFLINE)))) as Record<string, unknown>;
        assert.match(String(debug.stack), /ModelUnavailableError: no model file/);
        const bug = JSON.parse(logOnce("info", "json", false, (log) => log.error("x", describeError(new TypeError("undefined is not a function"))))) as Record<string, unknown>;
        assert.match(String(bug.stack), /^TypeError: undefined is not a function\n\s+at /);
    });

    void it("pretty: time, level, message and the fields in one line; quoted where needed", () => {
        const line = renderPretty({level: "info", message: "model loaded", timestamp: "2026-12-06T14:39:40.564Z",
            modelPath: "/m/x.gguf", ms: 52, reason: "given by model.path", nested: {a: 1}, none: null});
        assert.match(line, /^\d\d:\d\d:\d\d\.564 info {2}model loaded {2}modelPath=\/m\/x\.gguf ms=52 reason="given by model\.path" nested=\{"a":1\} none=null$/);
        assert.equal(line.includes("\n"), false);
    });

    void it("pretty: leaves out a field the message already says, cuts long nested values, indents a stack below", () => {
        const line = renderPretty({level: "warn", message: "send requests to qwen-edge/pi/request", timestamp: new Date().toISOString(),
            request: "qwen-edge/pi/request", cancel: "qwen-edge/pi/cancel", big: {list: "x".repeat(500)}, stack: "Error: e\n    at f (a.js:1:1)"});
        const [first, second, third] = line.split("\n");
        assert.equal(first!.includes("request=qwen-edge/pi/request"), false);
        assert.ok(first!.includes("cancel=qwen-edge/pi/cancel"));
        assert.ok(first!.length < 300 && first!.endsWith("…"), first);
        assert.equal(second, "    Error: e");
        assert.equal(third, "    at f (a.js:1:1)");
    });

    void it("auto: pretty on a terminal, JSON otherwise", () => {
        const onTty = logOnce("info", "auto", true, (log) => log.info("hello", {n: 1}));
        assert.match(onTty, /^\d\d:\d\d:\d\d\.\d{3} .*info.* hello {2}n=1\n$/);
        const onPipe = logOnce("info", "auto", false, (log) => log.info("hello", {n: 1}));
        assert.deepEqual(Object.keys(JSON.parse(onPipe) as object).sort(), ["level", "message", "n", "timestamp"]);
        assert.match(logOnce("info", "pretty", false, (log) => log.info("hello")), /^\d\d:\d\d:\d\d\.\d{3} info {2}hello\n$/);
    });

    void it("shortReason: one line of at most 300 characters", () => {
        assert.equal(shortReason("a\n  b\tc"), "a b c");
        const long = shortReason(`cannot download X: ${"y".repeat(1000)}`);
        assert.equal(long.length, 300);
        assert.ok(long.endsWith("…"));
    });
});

void describe("the daemon's first lines", () => {
    void it("name the device, the request topics and where the status is published", () => {
        const config = loadConfig({args: ["--device-id", "pi-kitchen"], env: {}});
        const [requests, status] = startupLines(config);
        assert.equal(requests?.message,
            "device \"pi-kitchen\": send requests to qwen-edge/pi-kitchen/request, or to qwen-edge/fleet/request for any device of the fleet");
        assert.equal(status?.message, "status is published (retained) on qwen-edge/pi-kitchen/status, health every 30 s on qwen-edge/pi-kitchen/health");
        assert.equal(requests?.fields.request, "qwen-edge/pi-kitchen/request");
    });

    void it("leave out the fleet queue when it is off, and count prompt routes", () => {
        const config = loadConfig({args: ["--device-id", "pi", "--mqtt-fleet-group", "", "--telemetry-interval-seconds", "10",
            "--routes", JSON.stringify([{name: "bell", topic: "home/bell", prompt: "Announce: {{payload}}", reply: {topic: "home/announce"}}])], env: {}});
        const [requests, status] = startupLines(config);
        assert.equal(requests?.message, "device \"pi\": send requests to qwen-edge/pi/request; 1 prompt route listens on its own topic");
        assert.match(status?.message ?? "", /health every 10 s on qwen-edge\/pi\/health$/);
    });
});
