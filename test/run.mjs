// Runs the compiled tests with Node's own test runner.
// Unit tests run in parallel; integration tests (each starts its own Mosquitto and daemon with a real
// model) run two at a time on this project's 2-core machines; the fault suite (it kills brokers and
// daemons and measures timings) runs one file at a time, then writes docs/RELIABILITY.md from what it measured.
import {spawnSync} from "node:child_process";
import {readdirSync, existsSync, mkdtempSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";

const which = process.argv[2] ?? "all";
const root = new URL("../dist/test/", import.meta.url).pathname;
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
    const results = g.report ? mkdtempSync(join(tmpdir(), "qe-fault-results-")) : null;
    const started = Date.now();
    const r = spawnSync(process.execPath, ["--test", `--test-concurrency=${g.concurrency}`, `--test-timeout=${g.timeoutMs ?? 300_000}`, ...g.files],
        {stdio: "inherit", env: {...process.env, ...(results ? {QE_FAULT_RESULTS: results} : {})}});
    if (r.status !== 0) failed = true;
    if (results) {
        const doc = new URL("../docs/RELIABILITY.md", import.meta.url).pathname;
        const w = spawnSync(process.execPath, [join(root, "support", "reliability-report.js"), results, doc, String(Date.now() - started)],
            {stdio: "inherit"});
        if (w.status !== 0) failed = true;
        rmSync(results, {recursive: true, force: true});
    }
}
process.exit(failed ? 1 : 0);
