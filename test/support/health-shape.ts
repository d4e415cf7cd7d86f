/**
 * Checks a health message field by field: every field present, each of its type (number, string,
 * boolean, or null where the machine may not know). Throws naming the first field that is wrong, so
 * a test failure says which field broke.
 */
import assert from "node:assert/strict";
import type {HealthMessage} from "../../src/telemetry/health.js";

type Kind = "number" | "string" | "boolean" | "number|null" | "string|null" | "iso";

function check(obj: unknown, path: string, kind: Kind): void {
    const value = path.split(".").reduce<unknown>((o, k) => (typeof o === "object" && o !== null ? (o as Record<string, unknown>)[k] : undefined), obj);
    const ok = kind === "number" ? typeof value === "number" && Number.isFinite(value)
        : kind === "string" ? typeof value === "string"
        : kind === "boolean" ? typeof value === "boolean"
        : kind === "number|null" ? value === null || (typeof value === "number" && Number.isFinite(value))
        : kind === "string|null" ? value === null || typeof value === "string"
        : typeof value === "string" && !Number.isNaN(Date.parse(value));
    assert.ok(ok, `health.${path} should be ${kind}, got ${JSON.stringify(value)}`);
}

const FLAGS = ["underVoltage", "frequencyCapped", "throttled", "softTemperatureLimit", "any"];

/** Asserts the whole shape; returns the message typed. */
export function assertHealthShape(message: unknown): HealthMessage {
    assert.equal(typeof message, "object");
    const fields: Array<[string, Kind]> = [
        ["device", "string"], ["at", "iso"], ["uptimeSeconds", "number"], ["intervalSeconds", "number"], ["state", "string"],
        ["memory.totalBytes", "number"], ["memory.availableBytes", "number"], ["memory.freeBytes", "number"],
        ["memory.swapTotalBytes", "number"], ["memory.swapFreeBytes", "number"], ["memory.processRssBytes", "number"],
        ["memory.budgetBytes", "number"], ["memory.cgroupLimitBytes", "number|null"], ["memory.cgroupUsageBytes", "number|null"],
        ["memory.cgroupHeadroomBytes", "number|null"],
        ["cpu.cores", "number"], ["cpu.available", "number"], ["cpu.load1", "number"], ["cpu.load5", "number"], ["cpu.load15", "number"],
        ["cpu.usagePercent", "number|null"], ["cpu.processPercent", "number|null"], ["cpu.temperatureC", "number|null"],
        ["inference.model", "string"], ["inference.modelState", "string"], ["inference.queued", "number"], ["inference.running", "number"],
        ["inference.paused", "boolean"], ["inference.completed", "number"], ["inference.failed", "number"], ["inference.rejected", "number"],
        ["inference.promptTokens", "number"], ["inference.tokensGenerated", "number"],
        ["inference.tokensPerSecond.last", "number|null"], ["inference.tokensPerSecond.average", "number|null"],
        ["inference.tokensPerSecond.recent", "number|null"], ["inference.tokensPerSecond.windowSeconds", "number"],
        ["inference.ttftMs.p50", "number|null"], ["inference.ttftMs.p95", "number|null"], ["inference.ttftMs.samples", "number"],
        ["inference.ttftMs.count", "number"], ["inference.promptCache.hits", "number"], ["inference.promptCache.reusedTokens", "number"],
        ["mqtt.connected", "boolean"], ["mqtt.reconnects", "number"], ["mqtt.lastConnectAt", "string|null"],
        ["jobs.pending", "number"], ["jobs.damagedAtStart", "number"], ["jobs.repliesDropped", "number"], ["collectMs", "number"]
    ];
    for (const [path, kind] of fields) check(message, path, kind);
    const m = message as HealthMessage;
    assert.ok(["starting", "loading", "online", "degraded", "offline"].includes(m.state), `health.state ${m.state}`);
    assert.ok(["loading", "ready", "failed"].includes(m.inference.modelState), `health.inference.modelState ${m.inference.modelState}`);
    assert.equal(typeof m.inference.errors, "object");
    assert.ok(typeof m.routes === "object" && m.routes !== null, "health.routes");
    for (const [code, n] of Object.entries(m.inference.errors)) assert.ok(typeof n === "number" && n > 0, `errors.${code}`);
    if (m.cpu.throttling !== null) {
        check(m, "cpu.throttling.raw", "string");
        assert.match(m.cpu.throttling.raw, /^0x[0-9a-f]+$/);
        assert.ok(["sysfs", "vcgencmd"].includes(m.cpu.throttling.source));
        for (const scope of ["now", "sinceBoot"]) for (const flag of FLAGS) check(m, `cpu.throttling.${scope}.${flag}`, "boolean");
    }
    if (m.disk !== null) {
        check(m, "disk.path", "string");
        check(m, "disk.freeBytes", "number");
        check(m, "disk.totalBytes", "number");
    }
    assert.ok(m.memory.availableBytes <= m.memory.totalBytes, "available <= total");
    assert.ok(m.memory.processRssBytes > 0, "rss > 0");
    return m;
}
