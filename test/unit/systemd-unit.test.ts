/**
 * systemd/qwen-edge.service as systemd itself judges it: `systemd-analyze verify` is clean and
 * `systemd-analyze security --offline=yes` scores 2.0 or lower. Skipped only where
 * systemd-analyze does not exist (it works without a running systemd).
 */
import assert from "node:assert/strict";
import {execFile, spawnSync} from "node:child_process";
import {mkdtemp, readFile, rm, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {fileURLToPath} from "node:url";
import {promisify} from "node:util";

const run = promisify(execFile);
const UNIT = fileURLToPath(new URL("../../../systemd/qwen-edge.service", import.meta.url));
const analyze = spawnSync("systemd-analyze", ["--version"]).status === 0;
const skip = analyze ? false : "systemd-analyze is not installed (apt-get install systemd)";

describe("systemd/qwen-edge.service", () => {
    let dir: string;
    let unitText: string;
    /** the unit with ExecStart pointing at a binary that exists here: verify checks it is executable */
    let testable: string;

    before(async () => {
        unitText = await readFile(UNIT, "utf8");
        dir = await mkdtemp(join(tmpdir(), "qe-unit-"));
        testable = join(dir, "qwen-edge.service");
        const execStart = /^ExecStart=\/opt\/qwen-edge\/bin\/qwen-edge (.*)$/m;
        assert.match(unitText, execStart, "ExecStart points at the install prefix");
        await writeFile(testable, unitText.replace(execStart, `ExecStart=${process.execPath} /opt/qwen-edge/dist/src/launcher.cjs $1`));
    });

    after(async () => {
        await rm(dir, {recursive: true, force: true});
    });

    it("passes `systemd-analyze verify` without a single warning", {skip}, async () => {
        const {stdout, stderr} = await run("systemd-analyze", ["verify", testable]);
        assert.equal(stderr + stdout, "");
    });

    it("scores 2.0 or lower in `systemd-analyze security --offline=yes`", {skip}, async () => {
        const result = spawnSync("systemd-analyze", ["security", "--offline=yes", "--no-pager", testable], {encoding: "utf8"});
        const score = /Overall exposure level for qwen-edge\.service: (\d+\.\d+)/.exec(result.stdout)?.[1];
        assert.ok(score !== undefined, `no score in: ${result.stdout.slice(-500)} ${result.stderr}`);
        assert.ok(Number(score) <= 2.0, `exposure ${score} > 2.0:\n${result.stdout.split("\n").filter((l) => l.startsWith("✗")).join("\n")}`);
        assert.equal(result.stderr, "", "the offline parser accepted every line");
        // The unit's own comment states the score: keep it honest.
        assert.ok(unitText.includes(`scores this file ${score} `), `the unit's comment should say ${score}`);
    });

    it("has what the daemon relies on", () => {
        const directives = new Map<string, string[]>();
        for (const line of unitText.split("\n")) {
            const m = /^(\w+)=(.*)$/.exec(line);
            if (m?.[1] !== undefined) directives.set(m[1], [...(directives.get(m[1]) ?? []), m[2] ?? ""]);
        }
        const one = (key: string): string | undefined => directives.get(key)?.[0];
        assert.equal(one("Type"), "notify");
        assert.equal(one("NotifyAccess"), "all", "sd_notify comes from systemd-notify children");
        assert.ok(one("WatchdogSec"), "WatchdogSec");
        assert.equal(one("Restart"), "on-failure");
        assert.ok(one("StartLimitIntervalSec") && one("StartLimitBurst"), "a start limit");
        assert.match(one("RestartPreventExitStatus") ?? "", /\b2\b/, "a configuration error (exit 2) is not restarted");
        assert.equal(one("StateDirectory"), "qwen-edge");
        assert.equal(one("CacheDirectory"), "qwen-edge");
        assert.equal(one("ConfigurationDirectory"), "qwen-edge");
        assert.equal(one("LoadCredential"), "mqtt-password:/etc/qwen-edge/mqtt-password");
        assert.equal(one("SetCredential"), "mqtt-password:\\n", "a fallback so a missing password file is not fatal");
        assert.equal(one("DynamicUser"), "yes");
        assert.equal(directives.has("MemoryDenyWriteExecute"), false, "V8 needs W+X memory");
        assert.match(one("ExecStart") ?? "", /--config \/etc\/qwen-edge\/config\.yaml$/);
    });
});
