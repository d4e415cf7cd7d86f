/**
 * The CLI as a user meets it: its own output and no log lines unless --verbose, Ctrl-C in `pull`
 * saying what happens to the download, and help that says what the code does.
 */
import assert from "node:assert/strict";
import {readdir, stat} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {runCli, tempDir, type DaemonProcess} from "../support/daemon.js";
import {startHfStandIn, type HfStandIn} from "../support/hf-standin.js";
import {buildTinyQwen35} from "../../src/testing/tiny-qwen35.js";

const REPO = "unsloth/Qwen3.5-0.8B-GGUF";
const FILE = "Qwen3.5-0.8B-Q4_K_M.gguf";

/** Waits until the command's output satisfies `match`; the error names what it waited for. */
async function waitForOutput(cli: DaemonProcess, what: string, match: (out: string) => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!match(cli.stdout())) {
        if (cli.child.exitCode !== null) throw new Error(`exited (${cli.child.exitCode}) before ${what}; stdout: ${cli.stdout()} stderr: ${cli.stderr()}`);
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stdout: ${cli.stdout()}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

const MiB = 1024 * 1024;

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 25));
    }
}

/** Lines that look like the daemon's JSON log lines. */
const logLines = (text: string): string[] => text.split("\n").filter((l) => /^\{.*"level":/.test(l));

describe("the qwen-edge command line", () => {
    // 13.3 MiB: the downloader saves in 5 MiB pieces, so an interrupted pull keeps something to resume from.
    const data = buildTinyQwen35({kind: "random", seed: 11, hidden: 192, layers: 8, weightType: "f32"});
    let hf: HfStandIn;
    let work: {path: string; dispose: () => Promise<void>};

    before(async () => {
        work = await tempDir("qe-cli-");
        // A slow link for the download itself (the planner's header read goes at full speed): 2.5 MB/s.
        hf = await startHfStandIn([{repo: REPO, file: FILE, data}],
            {throttle: {chunkBytes: 128 * 1024, intervalMs: 50, when: (range, size) => range === "" || range.endsWith(`-${size - 1}`)}});
    });
    after(async () => {
        await hf?.close();
        await work?.dispose();
    });

    it("pull: Ctrl-C says the download resumes next time and exits 130; the next pull resumes it", async () => {
        const dir = join(work.path, "models");
        const args = ["pull", "--variant", "0.8b", "--model-dir", dir, "--model-hf-endpoint", hf.endpoint];
        const first = runCli(args);
        await waitForOutput(first, "the download to start", (out) => /downloading/.test(out));
        const partial = join(dir, `${FILE}.partial.ipull`);
        await waitFor("the first 5 MiB piece on disk", async () => ((await stat(partial).catch(() => null))?.blocks ?? 0) * 512 >= 5 * MiB);
        first.child.kill("SIGINT");
        assert.deepEqual(await first.exited, {code: 130, signal: null});
        assert.match(first.stderr(), new RegExp(`^interrupted; the download resumes next time \\([\\d.]+ MiB of 13\\.3 MiB kept in ${dir}\\)\n$`));
        assert.deepEqual([...logLines(first.stdout()), ...logLines(first.stderr())], [], "no log lines without --verbose");
        assert.equal(first.stderr().includes("aborted"), false);
        assert.deepEqual(await readdir(dir), [`${FILE}.partial.ipull`], "the partial download is kept");

        const requestsBefore = hf.requests.length;
        const second = runCli(args);
        assert.equal((await second.exited).code, 0, second.stderr());
        assert.match(second.stdout(), new RegExp(`${FILE.replace(/\./g, "\\.")} \\(downloaded, sha256 verified\\)\\n$`));
        assert.equal((await stat(join(dir, FILE))).size, data.length);
        const starts = hf.requests.slice(requestsBefore).map((r) => /^GET \S+ bytes=(\d+)-(\d+)$/.exec(r))
            .filter((m): m is RegExpExecArray => m !== null && Number(m[2]) === data.length - 1).map((m) => Number(m[1]));
        assert.ok(starts.length > 0 && starts.every((start) => start >= 5 * MiB),
            `the second pull asked for the rest only: ${hf.requests.slice(requestsBefore).join("; ")}`);
        assert.deepEqual(logLines(second.stdout() + second.stderr()), []);
    });

    it("pull --verbose adds the log lines, on stderr", async () => {
        const dir = join(work.path, "models");
        const cli = runCli(["pull", "--variant", "0.8b", "--model-dir", dir, "--model-download", "false", "--verbose", "--log-format", "pretty"]);
        assert.equal((await cli.exited).code, 0, cli.stderr());
        assert.match(cli.stdout(), /\(already here, sha256 verified\)\n$/);
        assert.match(cli.stderr(), /^\d\d:\d\d:\d\d\.\d{3} info {2}model file ready /m);
        assert.deepEqual(logLines(cli.stdout()), [], "the command's own output stays clean");
    });

    it("run --help states the thread default the code uses", async () => {
        const help = runCli(["run", "--help"]);
        assert.equal((await help.exited).code, 0);
        assert.match(help.stdout(), /--inference-threads N +generation threads \(default: every CPU available to the process, affinity and cgroup quota, at most the physical cores\)/);
        assert.equal(help.stdout().includes("- 1"), false);
    });
});
