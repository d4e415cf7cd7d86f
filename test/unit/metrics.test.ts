/**
 * /metrics: the exposition passes a strict format check and `promtool check metrics` (Prometheus's own
 * linter, where installed: Debian's `prometheus` package), names follow Prometheus's conventions and
 * llama.cpp server's where they mean the same, and the HTTP side behaves.
 */
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {describe, it} from "node:test";
import {WIRE_ERROR_CODES} from "../../src/errors.js";
import {decodeThrottled} from "../../src/system/throttle.js";
import type {HealthMessage} from "../../src/telemetry/health.js";
import {InferenceStats} from "../../src/telemetry/inference-stats.js";
import {MetricsServer, renderMetrics, type MetricsInput} from "../../src/telemetry/metrics.js";
import {zeroCounters} from "../../src/routes/router.js";
import {readProcessFigures} from "../../src/telemetry/process-figures.js";
import {parseExposition} from "../support/exposition.js";

function sampleHealth(): HealthMessage {
    return {
        device: "pi-kitchen", at: new Date().toISOString(), uptimeSeconds: 12, intervalSeconds: 30, state: "degraded",
        memory: {totalBytes: 3975913472, availableBytes: 1847615488, freeBytes: 411762688, swapTotalBytes: 104853504, swapFreeBytes: 104853504,
            processRssBytes: 812000000, cgroupLimitBytes: 3221225472, cgroupUsageBytes: 1610612736, cgroupHeadroomBytes: 1879048192, budgetBytes: 1310000000},
        cpu: {cores: 4, available: 4, load1: 3.92, load5: 3.41, load15: 2.1, usagePercent: 97.5, processPercent: 388.2, temperatureC: 82.8,
            throttling: decodeThrottled(0xe0008, "sysfs")},
        // a path with the characters label values must escape
        disk: {path: "/var/cache/qwen \"edge\"\\models\nx", freeBytes: 20e9, totalBytes: 31e9},
        inference: {model: "Qwen3.5-2B-Q4_K_M", modelState: "ready", queued: 3, running: 1, paused: true, completed: 2, failed: 1, rejected: 1,
            errors: {queue_full: 1, timeout: 1}, promptTokens: 30, tokensGenerated: 70, tokensPerSecond: {last: 6.12, average: 5.9, recent: 6.05, windowSeconds: 60},
            ttftMs: {p50: 420, p95: 900, samples: 2, count: 2}, promptCache: {hits: 3, misses: 1, reusedTokens: 3100, checkpointBytes: 60_620_800}},
        mqtt: {connected: true, reconnects: 2, lastConnectAt: new Date().toISOString()},
        jobs: {pending: 4, damagedAtStart: 0, repliesDropped: 1},
        routes: {},
        conversations: {count: 2, tokens: 1800, evicted: 1, storageErrors: 0},
        collectMs: 1.2
    };
}

function sampleInput(health: HealthMessage | null): MetricsInput {
    const stats = new InferenceStats();
    stats.recordGeneration({promptTokens: 12, completionTokens: 41, ttftMs: 420, totalMs: 7000});
    stats.recordGeneration({promptTokens: 18, completionTokens: 29, ttftMs: 900, totalMs: 5000});
    stats.recordError("queue_full");
    stats.recordError("timeout");
    return {
        device: "pi-kitchen", version: "0.1.0", nodeLlamaCppVersion: "3.21.1", model: "Qwen3.5-2B-Q4_K_M", state: "degraded",
        inference: stats.figures(), rates: stats.recentRates(), queued: 3, running: 1, paused: true, parallel: 1,
        mqtt: {connected: true, reconnects: 2}, health,
        process: {cpuSeconds: 12.5, residentBytes: 812000000, virtualBytes: 1_900_000_000, openFds: 21, maxFds: 1024, startTimeSeconds: 1732871112},
        routes: {doorbell: {...zeroCounters(), received: 7, filtered: 1, rateLimited: 2, accepted: 4, answered: 3, failed: 1}},
        jobs: {pending: 4, damagedAtStart: 0, repliesDropped: 1}
    };
}

/** promtool's linter, when installed (Debian: apt-get install prometheus); `skip` says why not otherwise. */
const promtool = spawnSync("promtool", ["--version"]).status === 0;
const skipPromtool = promtool ? false : "promtool is not installed (apt-get install prometheus)";

function promtoolCheck(text: string): {status: number | null; output: string} {
    const r = spawnSync("promtool", ["check", "metrics"], {input: text, encoding: "utf8"});
    return {status: r.status, output: `${r.stdout}${r.stderr}`};
}

void describe("Prometheus exposition", () => {
    void it("passes the strict format check with every family typed and documented", () => {
        const families = parseExposition(renderMetrics(sampleInput(sampleHealth())));
        for (const f of families.values()) {
            assert.ok(f.help.length > 0, `${f.name} has help text`);
            assert.ok(f.name.startsWith("qwen_edge_") || f.name.startsWith("process_"), `${f.name} is namespaced`);
            assert.match(f.name, /^[a-z_]+$/, "snake_case, no \":\" (reserved for recording rules)");
        }
    });

    void it("passes `promtool check metrics` with no complaint, before the first health snapshot and after", {skip: skipPromtool}, () => {
        for (const health of [null, sampleHealth()]) {
            const {status, output} = promtoolCheck(renderMetrics(sampleInput(health)));
            assert.equal(output, "", "promtool says nothing");
            assert.equal(status, 0);
        }
        // The check itself can fail: the names this project used before issue 18.
        const old = promtoolCheck("# HELP qwenedge:prompt_tokens_total x\n# TYPE qwenedge:prompt_tokens_total counter\nqwenedge:prompt_tokens_total 1\n");
        assert.notEqual(old.status, 0);
        assert.match(old.output, /should not contain ':'/);
    });

    void it("has a 0 for every error code from the start, and the standard process figures", () => {
        const stats = new InferenceStats();
        const input = {...sampleInput(null), inference: stats.figures(), rates: stats.recentRates()};
        const families = parseExposition(renderMetrics(input));
        const errors = families.get("qwen_edge_request_errors_total");
        assert.deepEqual(errors?.samples.map((s) => s.labels.code), [...WIRE_ERROR_CODES].sort());
        assert.ok(errors?.samples.every((s) => s.value === 0));
        assert.equal(families.get("qwen_edge_prompt_tokens_per_second")?.samples[0]?.value, 0, "0 when nothing finished recently");
        for (const name of ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds",
            "process_max_fds", "process_start_time_seconds"]) assert.ok(families.has(name), name);
        const partial = parseExposition(renderMetrics({...input, process: {...input.process, virtualBytes: null, openFds: null, maxFds: null}}));
        assert.equal(partial.has("process_open_fds"), false, "left out where the platform has no /proc");
    });

    void it("uses llama.cpp server's metric names where they mean the same, with rates named _per_second", () => {
        const families = parseExposition(renderMetrics(sampleInput(sampleHealth())));
        const expected: Record<string, string> = {
            "qwen_edge_prompt_tokens_total": "counter", "qwen_edge_prompt_seconds_total": "counter",
            "qwen_edge_tokens_predicted_total": "counter", "qwen_edge_tokens_predicted_seconds_total": "counter",
            "qwen_edge_prompt_tokens_per_second": "gauge", "qwen_edge_predicted_tokens_per_second": "gauge",
            "qwen_edge_requests_processing": "gauge", "qwen_edge_requests_deferred": "gauge"
        };
        for (const [name, type] of Object.entries(expected)) assert.equal(families.get(name)?.type, type, name);
        const value = (name: string, labels: Record<string, string> = {}): number | undefined =>
            families.get(name)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
        assert.equal(value("qwen_edge_prompt_tokens_total"), 30);
        assert.equal(value("qwen_edge_tokens_predicted_total"), 70);
        assert.equal(value("qwen_edge_requests_processing"), 1);
        assert.equal(value("qwen_edge_requests_deferred"), 3);
        assert.equal(value("qwen_edge_request_errors_total", {code: "timeout"}), 1);
        assert.equal(value("qwen_edge_request_errors_total", {code: "internal"}), 0);
        assert.equal(value("qwen_edge_predicted_tokens_per_second"), 6.37, "40 + 28 tokens after the first in 6.58 + 4.1 s");
        assert.equal(value("process_open_fds"), 21);
        assert.equal(value("qwen_edge_time_to_first_token_seconds", {quantile: "0.5"}), 0.42);
        assert.equal(families.get("qwen_edge_time_to_first_token_seconds")?.samples.find((s) => s.name.endsWith("_count"))?.value, 2);
        assert.equal(value("qwen_edge_status", {state: "degraded"}), 1);
        assert.equal(value("qwen_edge_status", {state: "online"}), 0);
        assert.equal(value("qwen_edge_temperature_celsius"), 82.8);
        assert.equal(value("qwen_edge_throttling", {flag: "soft_temperature_limit", scope: "now"}), 1);
        assert.equal(value("qwen_edge_throttling", {flag: "throttled", scope: "now"}), 0);
        assert.equal(value("qwen_edge_paused"), 1);
        assert.equal(families.get("qwen_edge_disk_free_bytes")?.samples[0]?.labels.path, "/var/cache/qwen \"edge\"\\models\nx", "label escapes round-trip");
    });

    void it("leaves out what is unknown instead of inventing it", () => {
        const families = parseExposition(renderMetrics(sampleInput(null)));
        assert.equal(families.has("qwen_edge_temperature_celsius"), false);
        assert.equal(families.has("qwen_edge_memory_available_bytes"), false);
        const h = sampleHealth();
        const cool = parseExposition(renderMetrics(sampleInput({...h, cpu: {...h.cpu, temperatureC: null, throttling: null}})));
        assert.equal(cool.has("qwen_edge_temperature_celsius"), false);
        assert.equal(cool.has("qwen_edge_throttling"), false);
        assert.equal(cool.has("qwen_edge_memory_available_bytes"), true);
    });

    void it("rejects what a scraper would misread (the checker itself)", () => {
        const bad = [
            "qwen_edge_x 1\n",
            "# HELP qwen_edge_x x\n# TYPE qwen_edge_x gauge\nqwen_edge_x{a=\"1\",} 1\n",
            "# HELP qwen_edge_x x\n# TYPE qwen_edge_x gauge\nqwen_edge_x{a=\"\\q\"} 1\n",
            "# HELP qwen_edge_x x\n# TYPE qwen_edge_x counter\nqwen_edge_x 1\n",
            "# HELP qwen_edge_x x\n# TYPE qwen_edge_x gauge\nqwen_edge_x one\n",
            "# HELP qwen_edge_x x\n# TYPE qwen_edge_x gauge\nqwen_edge_x 1\nqwen_edge_x 2\n",
            "# HELP qwen_edge_x x\n# TYPE qwen_edge_x gauge\nqwen_edge_x 1"
        ];
        for (const text of bad) assert.throws(() => parseExposition(text), Error, JSON.stringify(text));
    });
});

void describe("process figures from /proc/self", () => {
    const skip = process.platform === "linux" ? false : "no /proc here";

    void it("agree with what Node itself says about this process", {skip}, () => {
        const before = process.cpuUsage();
        const p = readProcessFigures();
        const after = process.cpuUsage();
        // /proc counts in 10 ms ticks
        assert.ok(p.cpuSeconds >= (before.user + before.system) / 1e6 - 0.05 && p.cpuSeconds <= (after.user + after.system) / 1e6 + 0.05,
            `cpu ${p.cpuSeconds} s vs Node's ${(after.user + after.system) / 1e6} s`);
        const rss = process.memoryUsage.rss();
        assert.ok(Math.abs(p.residentBytes - rss) < rss * 0.2, `rss ${p.residentBytes} vs ${rss}`);
        assert.ok(p.virtualBytes !== null && p.virtualBytes > p.residentBytes);
        assert.ok(p.openFds !== null && p.openFds >= 3, `open fds ${p.openFds}`);
        assert.ok(p.maxFds !== null && p.maxFds > p.openFds);
        const started = Date.now() / 1000 - process.uptime();
        assert.ok(Math.abs(p.startTimeSeconds - started) < 2, `start ${p.startTimeSeconds} vs ${started}`);
    });

    void it("falls back to Node's figures where there is no /proc", () => {
        const p = readProcessFigures("/nonexistent-root");
        assert.deepEqual([p.virtualBytes, p.openFds, p.maxFds], [null, null, null]);
        assert.ok(p.cpuSeconds > 0 && p.residentBytes > 0 && p.startTimeSeconds > 1.7e9);
    });
});

void describe("metrics HTTP server", () => {
    void it("serves /metrics as text/plain version 0.0.4 on 127.0.0.1 and 404 elsewhere", async () => {
        const errors: Error[] = [];
        const server = new MetricsServer({host: "127.0.0.1", port: 0, render: () => renderMetrics(sampleInput(sampleHealth())), onError: (e) => errors.push(e)});
        const port = await server.start();
        assert.ok(port !== null && port > 0);
        try {
            const res = await fetch(`http://127.0.0.1:${port}/metrics`, {signal: AbortSignal.timeout(5000)});
            assert.equal(res.status, 200);
            assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
            parseExposition(await res.text());
            const other = await fetch(`http://127.0.0.1:${port}/`, {signal: AbortSignal.timeout(5000)});
            assert.equal(other.status, 404);
            await other.text();
        } finally {
            await server.stop();
        }
        assert.deepEqual(errors, []);
    });

    void it("reports a port it cannot bind instead of throwing", async () => {
        const first = new MetricsServer({host: "127.0.0.1", port: 0, render: () => "", onError: () => undefined});
        const port = await first.start();
        const errors: Error[] = [];
        const second = new MetricsServer({host: "127.0.0.1", port: port ?? 1, render: () => "", onError: (e) => errors.push(e)});
        try {
            assert.equal(await second.start(), null);
            assert.match(errors[0]?.message ?? "", /EADDRINUSE/);
        } finally {
            await second.stop();
            await first.stop();
        }
    });
});
