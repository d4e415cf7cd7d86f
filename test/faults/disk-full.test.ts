/**
 * The disk fills while a model downloads. The daemon runs in a private mount namespace (`unshare -m`)
 * whose model directory is a small tmpfs holding the current model (0.8B). The planner picks a
 * larger one (2B), served by a local Hugging Face stand-in; the free-space check passes, and at the
 * moment the download's first body is requested the test fills the tmpfs (through
 * /proc/<pid>/root, as another writer on a small SD card would). The download must fail with
 * `no_space`, its partial file removed, and the daemon must keep serving with the current model.
 */
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {open, readdir, statfs, writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe} from "node:test";
import {runCli, type DaemonProcess} from "../support/daemon.js";
import {MiB} from "../support/fault-kit.js";
import {Harness} from "../support/harness.js";
import {startHfStandIn, type HfStandIn} from "../support/hf-standin.js";
import type {TestClient} from "../support/mqtt-client.js";
import {SCRIPTED_ANSWER} from "../support/models.js";
import {faultCase} from "../support/reliability.js";
import {buildTinyQwen35} from "../../src/testing/tiny-qwen35.js";

const DEVICE = "fault-disk";
const SMALL = "Qwen3.5-0.8B-Q4_K_M.gguf";
const LARGE = "Qwen3.5-2B-Q4_K_M.gguf";
const TMPFS_MIB = 96;
/** Free space left after the fill: less than one of the downloader's writes. */
const LEFT_FREE = 512 * 1024;

/**
 * The reserve that leaves a budget of `budget` bytes whatever this machine has (MemAvailable, cgroup
 * limits), as the daemon's own planner sees it: the tiny 2B fits, the catalog's 4B (2.9 GiB) does not.
 */
async function reserveForBudget(budget: number, dir: string): Promise<number> {
    const plan = runCli(["plan", "--json", "--model-dir", dir, "--model-download", "false", "--model-reserve-bytes", "0"]);
    const {code} = await plan.exited;
    assert.equal(code, 0, `plan --json failed: ${plan.stderr()}`);
    const headroom = (JSON.parse(plan.stdout()) as {budgetBytes: number}).budgetBytes;
    return Math.max(0, headroom - budget);
}

async function fill(dir: string, leave: number): Promise<number> {
    const s = await statfs(dir);
    const bytes = s.bavail * s.bsize - leave;
    const file = await open(join(dir, "filler"), "w");
    try {
        const chunk = Buffer.alloc(4 * MiB, 1);
        for (let done = 0; done < bytes; done += chunk.length) await file.write(chunk, 0, Math.min(chunk.length, bytes - done));
    } finally {
        await file.close();
    }
    return bytes;
}

describe("faults: the disk fills during a download", () => {
    let h: Harness;
    let hf: HfStandIn | null = null;
    let client: TestClient;
    let daemon: DaemonProcess | null = null;

    before(async () => {
        h = await Harness.start({prefix: "qe-fault-disk-", subscribe: [`qwen-edge/${DEVICE}/status`, "r/#"]});
        client = h.client;
    });
    after(async () => {
        await h?.dispose();
        await hf?.close();
    });

    faultCase("F10", async (row) => {
        const mnt = join(h.dir, "models");
        const probe = spawnSync("unshare", ["-m", "sh", "-c", `mkdir -p "${mnt}" && mount -t tmpfs -o size=1m tmpfs "${mnt}"`], {encoding: "utf8"});
        if (probe.error !== undefined || probe.status !== 0) {
            row.skip(`needs root and unshare -m to mount a tmpfs: ${probe.error?.message ?? probe.stderr.trim()}`);
            return;
        }
        const small = join(h.dir, SMALL);
        await writeFile(small, buildTinyQwen35({kind: "scripted", seed: 4}));
        const large = buildTinyQwen35({kind: "random", seed: 11, hidden: 192, layers: 8, weightType: "f32"});
        let filledAt = 0;
        let filled = 0;
        const inside = (): string => `/proc/${daemon!.child.pid!}/root${mnt}`;
        hf = await startHfStandIn([{repo: "unsloth/Qwen3.5-2B-GGUF", file: LARGE, data: large}], {
            // The planner reads the header first; the download starts after provisioning asked for the checksum.
            beforeBody: async () => {
                if (filledAt !== 0 || !hf!.requests.some((r) => r.startsWith("POST "))) return;
                filledAt = Date.now();
                filled = await fill(inside(), LEFT_FREE);
            }
        });
        row.inject(`model.dir on a ${TMPFS_MIB} MiB tmpfs holding the current model (0.8B); the planner picks 2B (${(large.length / MiB).toFixed(1)} MiB, `
            + "downloaded from a local Hugging Face stand-in); when the download's first body is requested the tmpfs is filled to "
            + `${LEFT_FREE / 1024} KiB free`);
        const startedAt = Date.now();
        daemon = await h.spawn({device: DEVICE, model: "none", stateDir: join(h.dir, "state"),
            prefix: ["unshare", "-m", "sh", "-c", `mount -t tmpfs -o size=${TMPFS_MIB}m tmpfs "$1" && cp "$2" "$1/" && shift 2 && exec "$@"`,
                "sh", mnt, small],
            args: ["--model-dir", mnt, "--model-hf-endpoint", hf.endpoint, "--model-reserve-bytes", String(await reserveForBudget(1.25 * 1024 * MiB, join(h.dir, "empty"))),
                "--telemetry-interval-seconds", "1"]});
        const d = daemon;
        const plan = await d.waitForLog("model plan", (l) => l.message === "model plan", 30_000);
        assert.equal(plan.choice, "Qwen3.5-2B-Q4_K_M", `the planner must pick 2B: ${JSON.stringify(plan)}`);
        const failed = await d.waitForLog("2B candidate failed", (l) => l.message === "model candidate failed", 60_000);
        const problem = String(failed.error);
        const status = await client.waitFor("status after the fallback", (m) => m.topic === `qwen-edge/${DEVICE}/status` && m.at >= startedAt
            && (m.json?.state === "online" || m.json?.state === "degraded") && ((m.json?.reason as string | undefined) ?? "").includes("disk full"), 30_000);
        const servingAt = status.at;
        await client.publish(`qwen-edge/${DEVICE}/request`, JSON.stringify({id: "disk-ask", prompt: "hi", maxTokens: 16, replyTo: "r/disk-ask"}));
        const reply = await client.waitFor("reply to disk-ask", (m) => m.topic === "r/disk-ask");
        const files = (await readdir(inside())).sort();
        const free = await statfs(inside());

        row.replies(1, 1, client.received.filter((m) => m.topic === "r/disk-ask").length - 1);
        row.recovered(servingAt - filledAt);
        row.figure("failed candidate", String(failed.model));
        row.figure("error code", String(failed.code));
        row.figure("filled (MiB)", filled / MiB);
        row.figure("free after failure (KiB)", Math.round((free.bavail * free.bsize) / 1024));
        row.figure("files left", files.join(", "));
        row.figure("status", `${String(status.json?.state)}: ${String(status.json?.reason).replaceAll(mnt, "<model.dir>")}`);
        row.figure("served by", String(reply.json?.model));
        row.observe(`the 2B download failed with ${String(failed.code)} ("${problem.split(" to /")[0]}"); no partial file left `
            + `(${files.join(", ")}); the daemon fell back to the current 0.8B model and answered ${String(reply.json?.status)} `
            + `${servingAt - filledAt} ms after the disk filled, its status naming the full disk`);

        assert.equal(failed.code, "no_space", JSON.stringify(failed));
        assert.equal(failed.model, "Qwen3.5-2B-Q4_K_M");
        assert.match(problem, /^disk full while downloading Qwen3\.5-2B-Q4_K_M\.gguf .*the partial file was removed$/);
        assert.deepEqual(files.filter((f) => f.startsWith(LARGE)), [], `partial download left: ${files.join(", ")}`);
        assert.ok(files.includes(SMALL) && files.includes("filler"), files.join(", "));
        assert.equal(reply.json?.status, "ok");
        assert.equal(reply.json?.text, SCRIPTED_ANSWER);
        assert.equal(reply.json?.model, "Qwen3.5-0.8B-Q4_K_M");
        assert.deepEqual(await d.term(), {code: 0, signal: null});
    });
});
