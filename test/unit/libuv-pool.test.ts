import assert from "node:assert/strict";
import {execFile} from "node:child_process";
import {mkdtemp, rm, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {fileURLToPath} from "node:url";
import {promisify} from "node:util";
import {libuvPoolSize} from "../../src/inference/engine.js";

const exec = promisify(execFile);
const LAUNCHER = fileURLToPath(new URL("../../src/launcher.cjs", import.meta.url));
const MAIN = fileURLToPath(new URL("../../src/main.js", import.meta.url));

void describe("libuv pool size", () => {
    void it("reads UV_THREADPOOL_SIZE the way libuv does", () => {
        assert.equal(libuvPoolSize({}), 4, "unset: libuv's default");
        assert.equal(libuvPoolSize({UV_THREADPOOL_SIZE: "1"}), 1);
        assert.equal(libuvPoolSize({UV_THREADPOOL_SIZE: " 8"}), 8);
        assert.equal(libuvPoolSize({UV_THREADPOOL_SIZE: "0"}), 1, "0 becomes 1");
        assert.equal(libuvPoolSize({UV_THREADPOOL_SIZE: "many"}), 1, "atoi of garbage is 0, then 1");
        assert.equal(libuvPoolSize({UV_THREADPOOL_SIZE: "5000"}), 1024, "capped");
        assert.equal(libuvPoolSize({UV_THREADPOOL_SIZE: "-1"}), 1024, "unsigned wrap, then capped");
    });

    void describe("the launcher", {skip: process.platform !== "linux" ? "counts threads in /proc" : false}, () => {
        let dir = "";
        let probe = "";
        before(async () => {
            dir = await mkdtemp(join(tmpdir(), "qe-pool-"));
            probe = join(dir, "probe.cjs");
            // Preloaded with -r: counts the process's threads before anything else runs and again at exit.
            // Node's ESM loader starts the pool while loading main.js, so the difference is the pool's size.
            await writeFile(probe, "const {readdirSync} = require('node:fs');\n"
                + "const before = readdirSync('/proc/self/task').length;\n"
                + "process.on('exit', () => process.stderr.write(`pool threads: ${readdirSync('/proc/self/task').length - before}\\n`));\n");
        });
        after(async () => {
            await rm(dir, {recursive: true, force: true});
        });

        const poolThreads = async (entry: string, extraEnv: NodeJS.ProcessEnv): Promise<number> => {
            const env = {...process.env, ...extraEnv};
            if (!("UV_THREADPOOL_SIZE" in extraEnv)) delete env.UV_THREADPOOL_SIZE;
            const {stdout, stderr} = await exec(process.execPath, ["-r", probe, entry, "--version"], {env});
            assert.match(stdout, /^qwen-edge \d+\.\d+\.\d+/m, "the CLI ran");
            const m = /pool threads: (-?\d+)/.exec(stderr);
            assert.ok(m, `the probe reported: ${stderr}`);
            return Number(m[1]);
        };

        void it("starts the CLI with one libuv pool thread", async () => {
            assert.equal(await poolThreads(LAUNCHER, {}), 1);
        });

        void it("keeps a UV_THREADPOOL_SIZE from the environment", async () => {
            assert.equal(await poolThreads(LAUNCHER, {UV_THREADPOOL_SIZE: "3"}), 3);
        });

        void it("is needed: the ES module entry alone gets libuv's default 4", async () => {
            assert.equal(await poolThreads(MAIN, {}), 4);
        });
    });
});
