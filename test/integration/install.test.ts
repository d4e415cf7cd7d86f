/**
 * deploy/install.sh into a temporary DESTDIR (no root side effects, systemctl never called). The
 * first install runs the real `npm ci --omit=dev` (from the npm cache when it has the packages:
 * ~25 s here, most of it unpacking node-llama-cpp's prebuilt binaries) and proves the installed
 * copy runs; the re-runs use --skip-npm.
 */
import assert from "node:assert/strict";
import {execFile} from "node:child_process";
import {access, appendFile, lstat, mkdir, readFile, readdir, readlink, stat, writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {fileURLToPath} from "node:url";
import {promisify} from "node:util";
import {renderExampleConfig} from "../../src/cli/config-example.js";
import {tempDir} from "../support/daemon.js";

const exec = promisify(execFile);
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const SCRIPT = join(REPO, "deploy/install.sh");

interface Run {
    code: number;
    stdout: string;
    stderr: string;
}

async function install(destdir: string, args: string[] = []): Promise<Run> {
    try {
        const {stdout, stderr} = await exec("bash", [SCRIPT, ...args], {
            env: {...process.env, DESTDIR: destdir, npm_config_prefer_offline: "true"}, maxBuffer: 16 * 1024 * 1024, timeout: 240_000
        });
        return {code: 0, stdout, stderr};
    } catch (err) {
        const e = err as {code?: number; stdout?: string; stderr?: string};
        return {code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? ""};
    }
}

const exists = (path: string): Promise<boolean> => access(path).then(() => true, () => false);

describe("deploy/install.sh", () => {
    let tmp: {path: string; dispose: () => Promise<void>};
    let dest: string;
    let first: Run;
    let firstMs: number;

    before(async () => {
        tmp = await tempDir("qe-install-");
        dest = join(tmp.path, "root");
        const started = Date.now();
        first = await install(dest);
        firstMs = Date.now() - started;
    });

    after(async () => {
        await tmp?.dispose();
    });

    it("installs the program, its production dependencies, the config and the unit", async () => {
        assert.equal(first.code, 0, `install failed: ${first.stderr}\n${first.stdout}`);
        const prefix = join(dest, "opt/qwen-edge");
        for (const file of ["dist/src/launcher.cjs", "dist/src/main.js", "package.json", "package-lock.json", "systemd/qwen-edge.service", "deploy/config.example.yaml",
            "node_modules/node-llama-cpp/package.json", "node_modules/mqtt/package.json"])
            assert.ok(await exists(join(prefix, file)), `${file} installed`);
        assert.equal(await exists(join(prefix, "node_modules/typescript-eslint")), false, "no dev dependencies");
        const llamaBuilds = await readdir(join(prefix, "node_modules/@node-llama-cpp"));
        assert.deepEqual(llamaBuilds.filter((d) => /cuda|vulkan/.test(d)), [], "GPU builds pruned");
        const wrapper = await readFile(join(prefix, "bin/qwen-edge"), "utf8");
        assert.match(wrapper, new RegExp(`^exec ${process.execPath} /opt/qwen-edge/dist/src/launcher\\.cjs "\\$@"$`, "m"));
        assert.equal((await stat(join(prefix, "bin/qwen-edge"))).mode & 0o777, 0o755);
        assert.equal(await readlink(join(dest, "usr/local/bin/qwen-edge")), "/opt/qwen-edge/bin/qwen-edge");
        const config = join(dest, "etc/qwen-edge/config.yaml");
        assert.equal(await readFile(config, "utf8"), await readFile(join(REPO, "deploy/config.example.yaml"), "utf8"));
        assert.equal((await stat(config)).mode & 0o777, 0o644, "readable by the service's dynamic user");
        assert.equal(await readFile(join(dest, "etc/systemd/system/qwen-edge.service"), "utf8"),
            await readFile(join(REPO, "systemd/qwen-edge.service"), "utf8"));
        assert.match(first.stdout, /DESTDIR is set: skipped systemctl daemon-reload and enable/);
        assert.match(first.stdout, /journalctl -u qwen-edge -f/);
        assert.match(first.stdout, /mosquitto_sub -t 'qwen-edge\/\+\/status' -v/);
        assert.match(first.stdout, /llama\.cpp's prebuilt binary loads on this CPU/);
        process.stderr.write(`# install.sh with npm ci took ${firstMs} ms\n`);
    });

    it("the installed copy runs on its own dependencies", async () => {
        const {stdout} = await exec(process.execPath, [join(dest, "opt/qwen-edge/dist/src/launcher.cjs"), "config", "--example"], {cwd: tmp.path});
        assert.equal(stdout, renderExampleConfig());
    });

    it("is idempotent and never overwrites an existing config.yaml", async () => {
        const config = join(dest, "etc/qwen-edge/config.yaml");
        await appendFile(config, "\ninference:\n  threads: 2\n");
        const edited = await readFile(config, "utf8");
        await writeFile(join(dest, "opt/qwen-edge/stale-file"), "from an older version");
        const again = await install(dest, ["--skip-npm"]);
        assert.equal(again.code, 0, again.stderr);
        assert.equal(await readFile(config, "utf8"), edited);
        assert.match(again.stdout, /kept the existing \/etc\/qwen-edge\/config\.yaml/);
        assert.equal(await exists(join(dest, "opt/qwen-edge/stale-file")), false, "the program directory is replaced, not merged");
        assert.ok(await exists(join(dest, "etc/systemd/system/qwen-edge.service")));
    });

    it("follows --prefix into the unit and the wrapper", async () => {
        const other = join(tmp.path, "other");
        const r = await install(other, ["--prefix", "/srv/qe", "--skip-npm"]);
        assert.equal(r.code, 0, r.stderr);
        const unit = await readFile(join(other, "etc/systemd/system/qwen-edge.service"), "utf8");
        assert.match(unit, /^ExecStart=\/srv\/qe\/bin\/qwen-edge run --config \/etc\/qwen-edge\/config\.yaml$/m);
        assert.ok(!unit.includes("/opt/qwen-edge"), "no trace of the default prefix");
        assert.match(await readFile(join(other, "srv/qe/bin/qwen-edge"), "utf8"), /\/srv\/qe\/dist\/src\/launcher\.cjs/);
    });

    it("--uninstall removes the program and the unit and keeps the configuration; --purge removes that too", async () => {
        const r = await install(dest, ["--uninstall"]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(await exists(join(dest, "opt/qwen-edge")), false);
        assert.equal(await exists(join(dest, "etc/systemd/system/qwen-edge.service")), false);
        assert.equal(await lstat(join(dest, "usr/local/bin/qwen-edge")).then(() => true, () => false), false);
        assert.ok(await exists(join(dest, "etc/qwen-edge/config.yaml")), "config kept");
        assert.match(r.stdout, /kept \/etc\/qwen-edge/);
        const purge = await install(dest, ["--uninstall", "--purge"]);
        assert.equal(purge.code, 0, purge.stderr);
        assert.equal(await exists(join(dest, "etc/qwen-edge")), false);
    });

    it("refuses to replace a directory it did not create, and a relative or system prefix", async () => {
        const foreign = join(tmp.path, "foreign");
        await mkdir(join(foreign, "opt/qwen-edge"), {recursive: true});
        await writeFile(join(foreign, "opt/qwen-edge/precious"), "not ours");
        const r = await install(foreign, ["--skip-npm"]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /was not made by this installer/);
        assert.ok(await exists(join(foreign, "opt/qwen-edge/precious")));
        assert.match((await install(foreign, ["--prefix", "opt/x"])).stderr, /must be an absolute path/);
        assert.match((await install(foreign, ["--prefix", "/usr"])).stderr, /refusing to use '\/usr'/);
    });

    it("--help prints the usage; an unknown option fails with it", async () => {
        const help = await install(dest, ["--help"]);
        assert.equal(help.code, 0);
        assert.match(help.stdout, /^Usage: sudo deploy\/install\.sh/);
        assert.match(help.stdout, /--uninstall/);
        const bad = await install(dest, ["--frobnicate"]);
        assert.equal(bad.code, 1);
        assert.match(bad.stderr, /unknown option: --frobnicate/);
    });
});
