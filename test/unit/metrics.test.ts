/** /metrics: the exposition passes a strict format check, names follow llama.cpp's, and the HTTP side behaves. */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {decodeThrottled} from "../../src/system/throttle.js";
import type {HealthMessage} from "../../src/telemetry/health.js";
import {InferenceStats} from "../../src/telemetry/inference-stats.js";
import {MetricsServer, renderMetrics, type MetricsInput} from "../../src/telemetry/metrics.js";
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
            errors: {queue_full: 1, timeout: 1}, promptTokens: 30, tokensGenerated: 70, tokensPerSecond: {last: 6.12, average: 5.9},
            ttftMs: {p50: 420, p95: 900, samples: 2, count: 2}},
        mqtt: {connected: true, reconnects: 2, lastConnectAt: new Date().toISOString()},
        jobs: {pending: 4, damagedAtStart: 0},
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
        inference: stats.figures(), queued: 3, running: 1, paused: true, parallel: 1, mqtt: {connected: true, reconnects: 2}, health,
        processCpuSeconds: 12.5, processRssBytes: 812000000, processStartTimeSeconds: 1732871112
    };
}

void describe("Prometheus exposition", () => {
    void it("passes the strict format check with every family typed and documented", () => {
        const families = parseExposition(renderMetrics(sampleInput(sampleHealth())));
        for (const f of families.values()) {
            assert.ok(f.help.length > 0, `${f.name} has help text`);
            assert.ok(f.name.startsWith("qwenedge:") || f.name.startsWith("process_"), `${f.name} is namespaced`);
        }
    });

    void it("uses llama.cpp server's metric names and types under the qwenedge: prefix", () => {
        const families = parseExposition(renderMetrics(sampleInput(sampleHealth())));
        const expected: Record<string, string> = {
            "qwenedge:prompt_tokens_total": "counter", "qwenedge:prompt_seconds_total": "counter",
            "qwenedge:tokens_predicted_total": "counter", "qwenedge:tokens_predicted_seconds_total": "counter",
            "qwenedge:prompt_tokens_seconds": "gauge", "qwenedge:predicted_tokens_seconds": "gauge",
            "qwenedge:requests_processing": "gauge", "qwenedge:requests_deferred": "gauge"
        };
        for (const [name, type] of Object.entries(expected)) assert.equal(families.get(name)?.type, type, name);
        const value = (name: string, labels: Record<string, string> = {}): number | undefined =>
            families.get(name)?.samples.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
        assert.equal(value("qwenedge:prompt_tokens_total"), 30);
        assert.equal(value("qwenedge:tokens_predicted_total"), 70);
        assert.equal(value("qwenedge:requests_processing"), 1);
        assert.equal(value("qwenedge:requests_deferred"), 3);
        assert.equal(value("qwenedge:request_errors_total", {code: "timeout"}), 1);
        assert.equal(value("qwenedge:time_to_first_token_seconds", {quantile: "0.5"}), 0.42);
        assert.equal(families.get("qwenedge:time_to_first_token_seconds")?.samples.find((s) => s.name.endsWith("_count"))?.value, 2);
        assert.equal(value("qwenedge:status", {state: "degraded"}), 1);
        assert.equal(value("qwenedge:status", {state: "online"}), 0);
        assert.equal(value("qwenedge:temperature_celsius"), 82.8);
        assert.equal(value("qwenedge:throttling", {flag: "soft_temperature_limit", scope: "now"}), 1);
        assert.equal(value("qwenedge:throttling", {flag: "throttled", scope: "now"}), 0);
        assert.equal(value("qwenedge:paused"), 1);
        assert.equal(families.get("qwenedge:disk_free_bytes")?.samples[0]?.labels.path, "/var/cache/qwen \"edge\"\\models\nx", "label escapes round-trip");
    });

    void it("leaves out what is unknown instead of inventing it", () => {
        const families = parseExposition(renderMetrics(sampleInput(null)));
        assert.equal(families.has("qwenedge:temperature_celsius"), false);
        assert.equal(families.has("qwenedge:memory_available_bytes"), false);
        const h = sampleHealth();
        const cool = parseExposition(renderMetrics(sampleInput({...h, cpu: {...h.cpu, temperatureC: null, throttling: null}})));
        assert.equal(cool.has("qwenedge:temperature_celsius"), false);
        assert.equal(cool.has("qwenedge:throttling"), false);
        assert.equal(cool.has("qwenedge:memory_available_bytes"), true);
    });

    void it("rejects what a scraper would misread (the checker itself)", () => {
        const bad = [
            "qwenedge:x 1\n",
            "# HELP qwenedge:x x\n# TYPE qwenedge:x gauge\nqwenedge:x{a=\"1\",} 1\n",
            "# HELP qwenedge:x x\n# TYPE qwenedge:x gauge\nqwenedge:x{a=\"\\q\"} 1\n",
            "# HELP qwenedge:x x\n# TYPE qwenedge:x counter\nqwenedge:x 1\n",
            "# HELP qwenedge:x x\n# TYPE qwenedge:x gauge\nqwenedge:x one\n",
            "# HELP qwenedge:x x\n# TYPE qwenedge:x gauge\nqwenedge:x 1\nqwenedge:x 2\n",
            "# HELP qwenedge:x x\n# TYPE qwenedge:x gauge\nqwenedge:x 1"
        ];
        for (const text of bad) assert.throws(() => parseExposition(text), Error, JSON.stringify(text));
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
