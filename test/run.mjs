// Runs the compiled tests with Node's own test runner.
// Unit tests run in parallel; integration tests (each starts its own Mosquitto and daemon with a real
// model) run two at a time on this project's 2-core machines; the fault suite (it kills brokers and
// daemons and measures timings) runs one file at a time, then writes its report from what it measured
// to dist/test-results/RELIABILITY.md (untracked: a test run leaves the tree clean). With
// `--report FILE` the report also goes to FILE: `npm run reliability:report` writes docs/RELIABILITY.md.
import {spawnSync} from "node:child_process";
import {copyFileSync, existsSync, mkdirSync, readdirSync, rmSync} from "node:fs";
import {join, resolve} from "node:path";

const args = process.argv.slice(2);
const reportAt = args.indexOf("--report");
const reportTo = reportAt >= 0 ? args[reportAt + 1] : undefined;
if (reportAt >= 0 && !reportTo) {
    process.stderr.write("usage: node test/run.mjs [all|quick|unit|integration|faults|scale] [--report FILE]\n");
    process.exit(2);
}
const which = args.find((a, i) => !a.startsWith("--") && (reportAt < 0 || i !== reportAt + 1)) ?? "all";
const root = new URL("../dist/test/", import.meta.url).pathname;
const resultsDir = new URL("../dist/test-results/", import.meta.url).pathname;
const list = (dir) => existsSync(join(root, dir))
    ? readdirSync(join(root, dir)).filter((f) => f.endsWith(".test.js")).sort().map((f) => join(root, dir, f))
    : [];

const groups = [];
// "quick": everything but the real-scale tier (minutes of prompt processing), for working on the code.
const quick = which === "all" || which === "quick";
if (quick || which === "unit") groups.push({files: list("unit"), concurrency: 4});
if (quick || which === "integration") groups.push({files: list("integration"), concurrency: 2});
if (quick || which === "faults") groups.push({files: list("faults"), concurrency: 1, report: true});
// Real-size models (issue 14): minutes of prompt processing and gigabytes of memory, one file at a time.
if (which === "all" || which === "scale") groups.push({files: list("scale"), concurrency: 1, timeoutMs: 3_600_000});

let failed = false;
for (const g of groups) {
    if (g.files.length === 0) continue;
    const records = g.report ? join(resultsDir, "faults") : null;
    if (records) {
        rmSync(records, {recursive: true, force: true});
        mkdirSync(records, {recursive: true});
    }
    const started = Date.now();
    const r = spawnSync(process.execPath, ["--test", `--test-concurrency=${g.concurrency}`, `--test-timeout=${g.timeoutMs ?? 300_000}`, ...g.files],
        {stdio: "inherit", env: {...process.env, ...(records ? {QE_FAULT_RESULTS: records} : {})}});
    if (r.status !== 0) failed = true;
    if (records) {
        const report = join(resultsDir, "RELIABILITY.md");
        const w = spawnSync(process.execPath, [join(root, "support", "reliability-report.js"), records, report, String(Date.now() - started)],
            {stdio: "inherit"});
        if (w.status !== 0) failed = true;
        else if (reportTo) {
            copyFileSync(report, resolve(reportTo));
            process.stdout.write(`wrote ${reportTo}\n`);
        }
    }
}
process.exit(failed ? 1 : 0);
