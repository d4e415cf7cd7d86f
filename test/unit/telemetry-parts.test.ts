/** The small stateful pieces of telemetry: the status with conditions, thermal hysteresis, inference figures. */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {decodeThrottled} from "../../src/system/throttle.js";
import {HealthMonitor} from "../../src/telemetry/health.js";
import {InferenceStats, percentile} from "../../src/telemetry/inference-stats.js";
import {StatusReporter, type StatusMessage} from "../../src/telemetry/status.js";
import {ThermalGuard} from "../../src/telemetry/thermal.js";
import {FakeLink, memoryLogger} from "../support/fake-link.js";

const states = (link: FakeLink): string[] => link.published.map((p) => (JSON.parse(p.payload) as StatusMessage).state);

void describe("status reporter", () => {
    void it("publishes the transitions made before the first connection in order, retained, then each change", async () => {
        const link = new FakeLink();
        link.connected = false;
        const status = new StatusReporter({log: memoryLogger().log, topic: "qe/d/status", link});
        await status.set("starting");
        await status.set("loading", {progress: {phase: "loading"}});
        assert.equal(link.published.length, 0);
        link.connected = true;
        await status.republish();
        await status.set("online");
        assert.deepEqual(states(link), ["starting", "loading", "online"]);
        assert.ok(link.published.every((p) => p.options.retain === true && p.options.qos === 1));
        await status.republish();
        assert.deepEqual(states(link), ["starting", "loading", "online", "online"], "a reconnect republishes only the current state");
    });

    void it("turns online into degraded while a condition lasts, with every reason, and back", async () => {
        const link = new FakeLink();
        const status = new StatusReporter({log: memoryLogger().log, topic: "qe/d/status", link});
        await status.set("online");
        await status.setCondition("thermal", "temperature at or above 80 °C");
        await status.setCondition("memory", "memory headroom below 64 MiB");
        assert.equal(status.status.state, "degraded");
        assert.equal(status.status.reason, "temperature at or above 80 °C; memory headroom below 64 MiB");
        assert.deepEqual(status.status.conditions, ["thermal", "memory"]);
        const published = link.published.length;
        await status.setCondition("thermal", "temperature at or above 80 °C");
        assert.equal(link.published.length, published, "an unchanged condition publishes nothing");
        await status.setCondition("thermal", null);
        await status.setCondition("memory", null);
        assert.equal(status.status.state, "online");
        assert.equal(status.status.reason, undefined);
    });

    void it("keeps conditions out of starting and loading, and adds them to a degraded lifecycle", async () => {
        const link = new FakeLink();
        const status = new StatusReporter({log: memoryLogger().log, topic: "qe/d/status", link});
        await status.setCondition("thermal", "hot");
        await status.set("loading");
        assert.equal(status.status.state, "loading");
        await status.set("degraded", {reason: "model unavailable: broken file"});
        assert.equal(status.status.reason, "model unavailable: broken file; hot");
    });

    void it("sends progress-only updates at most once a second", async () => {
        const link = new FakeLink();
        const status = new StatusReporter({log: memoryLogger().log, topic: "qe/d/status", link});
        await status.set("loading", {progress: {percent: 1}});
        for (let i = 2; i < 50; i++) await status.set("loading", {progress: {percent: i}});
        assert.ok(link.published.length <= 3, `${link.published.length} publishes for 49 progress updates`);
        assert.deepEqual(status.status.progress, {percent: 49}, "the current status still has the latest progress");
    });
});

void describe("thermal guard", () => {
    const make = (pauseWhenHot: boolean): {guard: ThermalGuard; conditions: Array<string | null>; pauses: boolean[]} => {
        const conditions: Array<string | null> = [];
        const pauses: boolean[] = [];
        const guard = new ThermalGuard({maxTemperatureC: 80, coolDownC: 5, pauseWhenHot,
            setCondition: (r) => conditions.push(r), setPaused: (p) => pauses.push(p)});
        return {guard, conditions, pauses};
    };

    void it("goes hot at the limit, stays hot within the hysteresis, cools below it", () => {
        const {guard, conditions, pauses} = make(true);
        guard.update({temperatureC: 79.9, throttling: null});
        assert.deepEqual(conditions, []);
        guard.update({temperatureC: 80, throttling: null});
        assert.equal(guard.state.hot, true);
        assert.equal(conditions.at(-1), "temperature at or above 80 °C");
        guard.update({temperatureC: 81.3, throttling: null});
        assert.equal(conditions.length, 1, "the reason names the limit, so a rising reading changes nothing");
        guard.update({temperatureC: 77, throttling: null});
        assert.equal(guard.state.hot, true);
        assert.equal(conditions.at(-1), "cooling down to 75 °C");
        guard.update({temperatureC: 75, throttling: null});
        assert.equal(guard.state.hot, false);
        assert.equal(conditions.at(-1), null);
        assert.deepEqual(pauses, [true, true, true, false], "paused while hot (re-asserted each reading), resumed once cool");
    });

    void it("counts firmware throttling as hot at any temperature, and never pauses unless asked", () => {
        const {guard, conditions, pauses} = make(false);
        guard.update({temperatureC: 55, throttling: decodeThrottled(0x50005, "sysfs")});
        assert.equal(guard.state.hot, true);
        assert.equal(conditions.at(-1), "firmware reports under-voltage, throttled");
        guard.update({temperatureC: 55, throttling: decodeThrottled(0x50000, "sysfs")});
        assert.equal(guard.state.hot, false, "flags only since boot are history, not a reason now");
        assert.deepEqual(pauses, []);
    });

    void it("stays cool when the device has no thermal zone", () => {
        const {guard, conditions} = make(true);
        guard.update({temperatureC: null, throttling: null});
        assert.equal(guard.state.hot, false);
        assert.deepEqual(conditions, []);
    });
});

void describe("inference figures", () => {
    void it("counts tokens, speeds and TTFT percentiles, and tells failures from rejections", () => {
        const stats = new InferenceStats({window: 4});
        assert.deepEqual(stats.figures().tokensPerSecond, {last: null, average: null, recent: null, windowSeconds: 60});
        stats.recordGeneration({promptTokens: 10, completionTokens: 11, ttftMs: 100, totalMs: 600});
        stats.recordGeneration({promptTokens: 5, completionTokens: 21, ttftMs: 300, totalMs: 1300});
        stats.recordGeneration({promptTokens: 5, completionTokens: 0, ttftMs: null, totalMs: 50});
        for (const code of ["invalid_json", "queue_full", "timeout", "internal", "timeout"]) stats.recordError(code);
        const f = stats.figures();
        assert.equal(f.completed, 3);
        assert.equal(f.rejected, 2);
        assert.equal(f.failed, 3);
        assert.deepEqual(f.errors, {invalid_json: 1, queue_full: 1, timeout: 2, internal: 1});
        assert.equal(f.promptTokens, 20);
        assert.equal(f.tokensGenerated, 32);
        assert.equal(f.tokensPerSecond.last, 20, "20 tokens after the first in 1 s");
        assert.equal(f.tokensPerSecond.average, 20, "30 tokens in 1.5 s");
        assert.deepEqual(f.ttftMs, {p50: 100, p95: 300, samples: 2, count: 2});
        assert.equal(f.promptSeconds, 0.4);
    });

    void it("keeps percentiles over the last window only", () => {
        const stats = new InferenceStats({window: 3});
        for (const ttft of [1000, 1000, 1000, 10, 20, 30]) stats.recordGeneration({promptTokens: 1, completionTokens: 1, ttftMs: ttft, totalMs: ttft});
        assert.deepEqual(stats.figures().ttftMs, {p50: 20, p95: 30, samples: 3, count: 6});
    });

    void it("gives speeds over the recent window: null when idle, the last request's speed kept apart", () => {
        let now = 1_000_000;
        const stats = new InferenceStats({rateWindowMs: 60_000, now: () => now});
        assert.deepEqual(stats.recentRates(), {prompt: null, predicted: null});
        stats.recordGeneration({promptTokens: 100, completionTokens: 11, ttftMs: 500, totalMs: 1500});
        now += 30_000;
        stats.recordGeneration({promptTokens: 50, completionTokens: 31, ttftMs: 500, totalMs: 2500});
        assert.deepEqual(stats.recentRates(), {prompt: 150, predicted: 13.33}, "150 prompt tokens in 1 s; 40 tokens in 3 s");
        now += 45_000;
        assert.deepEqual(stats.recentRates(), {prompt: 100, predicted: 15}, "the first request left the window");
        now += 60_000;
        const idle = stats.figures().tokensPerSecond;
        assert.deepEqual(idle, {last: 15, average: 13.33, recent: null, windowSeconds: 60}, "idle: recent is unknown, last stays");
    });

    void it("takes nearest-rank percentiles", () => {
        assert.equal(percentile([], 0.5), null);
        assert.equal(percentile([7], 0.95), 7);
        assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), 5);
        assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95), 10);
    });
});

void describe("health monitor", () => {
    void it("never runs two snapshots at once, and stops within its bound even when a snapshot hangs", async () => {
        let running = 0;
        let maxRunning = 0;
        let ticks = 0;
        const monitor = new HealthMonitor({intervalMs: 10, tick: async () => {
            ticks++;
            running++;
            maxRunning = Math.max(maxRunning, running);
            // the third snapshot never finishes, like a read from a stalled SD card
            await new Promise((r) => setTimeout(r, ticks === 3 ? 60_000 : 30).unref());
            running--;
        }});
        monitor.start();
        for (let i = 0; i < 5; i++) monitor.now();
        // Wait for the evidence (the hung third snapshot has started), not a fixed time a loaded box outruns.
        for (const until = Date.now() + 5000; ticks < 3 && Date.now() < until;) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, 150));
        assert.equal(maxRunning, 1);
        assert.equal(ticks, 3, "the hung snapshot holds the next one back instead of piling up");
        const started = Date.now();
        await monitor.stop(300);
        assert.ok(Date.now() - started < 1000, "stop is bounded");
    });
});
