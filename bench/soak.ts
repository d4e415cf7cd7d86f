/**
 * Soak: the built daemon under steady requests for a long time (30 minutes by default; not in CI),
 * sampling its resident memory, open file descriptors and threads from /proc every 10 s, then a
 * summary with least-squares slopes: a leak shows as a slope that stays up after warm-up.
 *
 *   npm run build && node dist/bench/soak.js [--minutes 30] [--rate 2] [--max-tokens 32] [--out FILE]
 *
 * Its own Mosquitto on a free port, the project's tiny "endless" qwen35 model, one thread.
 */
import {mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import {startBroker} from "../test/support/broker.js";
import {writeTinyQwen35} from "../src/testing/tiny-qwen35.js";
import {packageVersion} from "../src/version.js";
import {BenchClient, BenchDaemon} from "./daemon-client.js";
import {machineInfo, processMemory} from "./proc.js";
import {quantile} from "./stats.js";

const USAGE = `usage: node dist/bench/soak.js [--minutes N] [--rate R] [--max-tokens N] [--sample-seconds N] [--out FILE]
  --minutes N         how long to run (default 30)
  --rate R            requests per second, steady (default 2); every third one streamed
  --max-tokens N      tokens per request (default 32)
  --sample-seconds N  /proc sampling period (default 10)
  --out FILE          JSON summary (default bench/results/soak-latest.json)
`;

interface Sample {
    atSeconds: number;
    rssMiB: number;
    anonMiB: number;
    fds: number;
    threads: number;
    answered: number;
}

function parseArgs(argv: string[]): {minutes: number; rate: number; maxTokens: number; sampleSeconds: number; out: string} {
    const o = {minutes: 30, rate: 2, maxTokens: 32, sampleSeconds: 10,
        out: fileURLToPath(new URL("../../bench/results/soak-latest.json", import.meta.url))};
    for (let i = 0; i < argv.length; i++) {
        const flag = argv[i];
        const value = argv[i + 1];
        if (flag === "--help" || flag === "-h") {
            process.stdout.write(USAGE);
            process.exit(0);
        }
        if (value === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
        if (flag === "--out") o.out = value;
        else if (flag === "--minutes") o.minutes = Number(value);
        else if (flag === "--rate") o.rate = Number(value);
        else if (flag === "--max-tokens") o.maxTokens = Number(value);
        else if (flag === "--sample-seconds") o.sampleSeconds = Number(value);
        else throw new Error(`unknown option ${flag}\n${USAGE}`);
        i++;
    }
    if (![o.minutes, o.rate, o.maxTokens, o.sampleSeconds].every((n) => Number.isFinite(n) && n > 0)) throw new Error(`bad numbers\n${USAGE}`);
    return o;
}

/** Least-squares slope of y over x (per unit of x). */
function slope(xs: readonly number[], ys: readonly number[]): number {
    const n = xs.length;
    if (n < 2) return 0;
    const mx = xs.reduce((a, b) => a + b, 0) / n;
    const my = ys.reduce((a, b) => a + b, 0) / n;
    let num = 0;
    let den = 0;
    for (let i = 0; i < n; i++) {
        num += (xs[i]! - mx) * (ys[i]! - my);
        den += (xs[i]! - mx) ** 2;
    }
    return den === 0 ? 0 : num / den;
}

function threadsOf(pid: number): number {
    return Number(/^Threads:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN);
}

const r2 = (n: number): number => Math.round(n * 100) / 100;

async function main(): Promise<void> {
    const o = parseArgs(process.argv.slice(2));
    const work = mkdtempSync(join(tmpdir(), "qe-soak-"));
    const broker = await startBroker();
    const model = (await writeTinyQwen35(join(work, "soak-endless.gguf"), {kind: "endless", seed: 1})).path;
    const daemon = new BenchDaemon({brokerUrl: broker.url, modelPath: model, deviceId: "soak", nodeFlags: [],
        args: ["--inference-threads", "1", "--inference-context-size", "1024", "--inference-temperature", "0", "--telemetry-interval-seconds", "5"]});
    const client = await BenchClient.connect(broker.url, "soak");
    const samples: Sample[] = [];
    const latencies: number[] = [];
    let sent = 0;
    let answered = 0;
    const failures: string[] = [];
    try {
        const onlineMs = await daemon.start();
        const pid = daemon.pid;
        const started = Date.now();
        const endAt = started + o.minutes * 60_000;
        process.stdout.write(`soak: daemon ${pid} online in ${Math.round(onlineMs)} ms; ${o.minutes} min at ${o.rate} req/s, ${o.maxTokens} tokens each\n`);
        const sample = (): void => {
            const mem = processMemory(pid);
            const s: Sample = {atSeconds: Math.round((Date.now() - started) / 1000), rssMiB: r2(mem.rssBytes / 2 ** 20),
                anonMiB: r2(mem.rssAnonBytes / 2 ** 20), fds: readdirSync(`/proc/${pid}/fd`).length, threads: threadsOf(pid), answered};
            samples.push(s);
            process.stdout.write(`  t=${s.atSeconds}s rss ${s.rssMiB} MiB (anon ${s.anonMiB}) fds ${s.fds} threads ${s.threads} answered ${answered}/${sent}\n`);
        };
        sample();
        const sampler = setInterval(sample, o.sampleSeconds * 1000);
        const inFlight = new Set<Promise<void>>();
        // Steady arrivals on a fixed schedule (not back to back): a slow reply must not slow the load.
        for (let i = 0; Date.now() < endAt; i++) {
            const due = started + (i * 1000) / o.rate;
            if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
            sent++;
            const p = client.request(daemon.layout.request, {prompt: `soak ${i}`, maxTokens: o.maxTokens, stream: i % 3 === 0, seed: 1}, 60_000)
                .then((s) => { answered++; latencies.push(s.finalMs); }, (err: unknown) => { failures.push((err as Error).message.slice(0, 200)); })
                .finally(() => inFlight.delete(p));
            inFlight.add(p);
        }
        await Promise.all(inFlight);
        clearInterval(sampler);
        sample();
    } finally {
        await daemon.stop();
        await client.close();
        await broker.dispose();
        daemon.dispose();
        rmSync(work, {recursive: true, force: true});
    }

    // Slopes per hour, over everything and after the first fifth (allocators and JIT warm up first).
    // V8's heap makes RSS a sawtooth (it climbs until a major GC drops it), so over a few minutes the
    // slope of all samples is noise. The samples right after a drop (post-GC lows) show a leak: they rise.
    const hours = samples.map((x) => x.atSeconds / 3600);
    const lows = samples.filter((x, i) => i > 0 && x.rssMiB <= samples[i - 1]!.rssMiB - 2).map((x) => ({atSeconds: x.atSeconds, rssMiB: x.rssMiB}));
    const lastThird = samples.filter((x) => x.atSeconds >= (samples.at(-1)!.atSeconds * 2) / 3);
    const late = samples.filter((s) => s.atSeconds >= samples.at(-1)!.atSeconds / 5);
    const lateHours = late.map((s) => s.atSeconds / 3600);
    const summary = {
        kind: "qwen-edge soak", version: packageVersion(), at: new Date().toISOString(), machine: machineInfo(),
        options: {minutes: o.minutes, rate: o.rate, maxTokens: o.maxTokens, sampleSeconds: o.sampleSeconds},
        requests: {sent, answered, failed: failures.length, firstFailures: failures.slice(0, 5),
            finalMsP50: r2(quantile(latencies, 0.5) ?? NaN), finalMsP95: r2(quantile(latencies, 0.95) ?? NaN)},
        rssMiB: {first: samples[0]?.rssMiB, last: samples.at(-1)?.rssMiB, min: Math.min(...samples.map((s) => s.rssMiB)),
            max: Math.max(...samples.map((s) => s.rssMiB)),
            slopePerHour: r2(slope(hours, samples.map((s) => s.rssMiB))), slopePerHourAfterWarmup: r2(slope(lateHours, late.map((s) => s.rssMiB))),
            slopePerHourLastThird: r2(slope(lastThird.map((x) => x.atSeconds / 3600), lastThird.map((x) => x.rssMiB)))},
        rssPostGcLowsMiB: {lows, slopePerHour: lows.length >= 2 ? r2(slope(lows.map((f) => f.atSeconds / 3600), lows.map((f) => f.rssMiB))) : null},
        anonMiB: {first: samples[0]?.anonMiB, last: samples.at(-1)?.anonMiB, slopePerHourAfterWarmup: r2(slope(lateHours, late.map((s) => s.anonMiB)))},
        fds: {first: samples[0]?.fds, last: samples.at(-1)?.fds, min: Math.min(...samples.map((s) => s.fds)), max: Math.max(...samples.map((s) => s.fds)),
            slopePerHour: r2(slope(hours, samples.map((s) => s.fds)))},
        threads: {min: Math.min(...samples.map((s) => s.threads)), max: Math.max(...samples.map((s) => s.threads))},
        samples
    };
    mkdirSync(dirname(o.out), {recursive: true});
    writeFileSync(o.out, JSON.stringify(summary, null, 2) + "\n");
    process.stdout.write([
        "",
        `requests: ${sent} sent, ${answered} answered, ${failures.length} failed; final reply p50 ${summary.requests.finalMsP50} ms, p95 ${summary.requests.finalMsP95} ms`,
        `RSS MiB: ${summary.rssMiB.first} → ${summary.rssMiB.last} (min ${summary.rssMiB.min}, max ${summary.rssMiB.max}); slope ${summary.rssMiB.slopePerHour} MiB/h, `
            + `${summary.rssMiB.slopePerHourAfterWarmup} MiB/h after warm-up (anon ${summary.anonMiB.slopePerHourAfterWarmup} MiB/h), `
            + `${summary.rssMiB.slopePerHourLastThird} MiB/h over the last third`,
        `RSS after each major GC (a drop of 2 MiB or more): ${lows.map((f) => `${f.rssMiB} at ${f.atSeconds}s`).join(", ") || "none"}; `
            + `slope ${summary.rssPostGcLowsMiB.slopePerHour ?? "n/a (fewer than 2)"} MiB/h`,
        `fds: ${summary.fds.first} → ${summary.fds.last} (min ${summary.fds.min}, max ${summary.fds.max}); slope ${summary.fds.slopePerHour}/h`,
        `threads: ${summary.threads.min}–${summary.threads.max}`,
        `written to ${o.out}`,
        ""
    ].join("\n"));
}

main().catch((err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
});
