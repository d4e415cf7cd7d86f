import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {mkdtemp, mkdir, rm, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import {defaultThreads, parseCpuList, probeDevice, readTemperatureC} from "../../src/system/probe.js";

// Compiled to dist/test/unit; the recorded trees stay in the source tree.
const fixtures = join(dirname(fileURLToPath(import.meta.url)), "../../../test/fixtures/sysfs");
const KiB = 1024;

/** Runs `fn` on a scratch /proc + /sys tree, for cases the recorded ones do not cover. */
async function withTree(files: Record<string, string>, fn: (root: string) => Promise<void>): Promise<void> {
    const root = await mkdtemp(join(tmpdir(), "qwen-edge-probe-"));
    try {
        for (const [path, content] of Object.entries(files)) {
            await mkdir(dirname(join(root, path)), {recursive: true});
            await writeFile(join(root, path), content);
        }
        await fn(root);
    } finally {
        await rm(root, {recursive: true, force: true});
    }
}

describe("probeDevice on recorded trees", () => {
    it("reads a Raspberry Pi 4 with 4 GB: meminfo, no cgroup limit, 4 cores, board model without its NUL", async () => {
        const root = join(fixtures, "pi4-4gb");
        const facts = await probeDevice({root});
        assert.equal(facts.memory.totalBytes, 3_882_728 * KiB);
        assert.equal(facts.memory.availableBytes, 3_222_656 * KiB);
        assert.equal(facts.memory.freeBytes, 2_794_760 * KiB);
        assert.equal(facts.memory.swapTotalBytes, 102_396 * KiB);
        assert.equal(facts.memory.swapFreeBytes, 102_396 * KiB);
        assert.equal(facts.memory.cgroup.version, 2);
        assert.equal(facts.memory.cgroup.limitBytes, null, "memory.max = max at every level is no limit");
        assert.equal(facts.memory.cgroup.headroomBytes, null);
        assert.equal(facts.memory.cgroup.usageBytes, 104_226_816, "usage of the service's own cgroup");
        assert.equal(facts.memory.constrainedBytes, null, "a recorded tree never reports this process's constraint");
        assert.deepEqual(facts.cpu, {logical: 4, available: 4, quota: null, physicalCores: null, model: "ARM Cortex-A72"});
        assert.deepEqual(facts.board, {arch: "arm64", simd: [], model: "Raspberry Pi 4 Model B Rev 1.4", vendor: "Raspberry Pi Ltd", isRaspberryPi: true});
        assert.equal(await readTemperatureC(root), 48.686);
    });

    it("reads a cgroup v2 container: 1 GiB memory.max, headroom net of inactive file cache, 1.5 CPUs rounds up to 2", async () => {
        const root = join(fixtures, "container-1g");
        const facts = await probeDevice({root});
        assert.equal(facts.memory.totalBytes, 16_318_412 * KiB);
        assert.equal(facts.memory.availableBytes, 12_687_320 * KiB);
        assert.deepEqual(facts.memory.cgroup, {
            version: 2, limitBytes: 1_073_741_824, usageBytes: 150_994_944, inactiveFileBytes: 41_943_040,
            headroomBytes: 1_073_741_824 - (150_994_944 - 41_943_040), swapLimitBytes: 1_073_741_824, path: "/"
        });
        assert.deepEqual(facts.cpu, {logical: 8, available: 2, quota: 1.5, physicalCores: null, model: "Intel(R) Core(TM) i7-10510U CPU @ 1.80GHz"});
        assert.equal(defaultThreads(facts.cpu), 2, "generation threads follow the quota, not the 8 CPUs");
        assert.deepEqual(facts.board, {arch: "x64", simd: ["avx2"], model: null, vendor: null, isRaspberryPi: false});
        assert.equal(await readTemperatureC(root), null, "no thermal zones in the tree");
    });

    it("reads a cgroup v1 container whose /proc/self/cgroup names a host path its mount does not contain", async () => {
        const facts = await probeDevice({root: join(fixtures, "cgroup-v1-2g")});
        assert.equal(facts.memory.availableBytes, 5_912_344 * KiB);
        assert.deepEqual(facts.memory.cgroup, {
            version: 1, limitBytes: 2_147_483_648, usageBytes: 312_475_648, inactiveFileBytes: 100_663_296,
            headroomBytes: 1_935_671_296, swapLimitBytes: 2_147_483_648, path: "/"
        });
        assert.deepEqual(facts.cpu, {logical: 4, available: 4, quota: null, physicalCores: null, model: "AMD Ryzen Embedded V1605B with Radeon Vega Gfx"});
        assert.equal(facts.board.arch, "x64");
    });
});

describe("probeDevice on scratch trees", () => {
    it("counts physical cores from sysfs topology: 4 SMT threads on 2 cores give 2 generation threads", () => withTree({
        "proc/cpuinfo": [0, 1, 2, 3].map((i) => `processor\t: ${i}\nmodel name\t: Intel(R) Celeron(R) J4125\n`).join("\n"),
        "proc/self/status": "Cpus_allowed_list:\t0-3\n",
        ...Object.fromEntries([0, 1, 2, 3].flatMap((i) => [
            [`sys/devices/system/cpu/cpu${i}/topology/physical_package_id`, "0\n"],
            [`sys/devices/system/cpu/cpu${i}/topology/core_id`, `${i % 2}\n`]
        ]))
    }, async (root) => {
        const facts = await probeDevice({root});
        assert.equal(facts.cpu.available, 4);
        assert.equal(facts.cpu.physicalCores, 2);
        assert.equal(defaultThreads(facts.cpu), 2);
        assert.equal(defaultThreads({...facts.cpu, available: 1}), 1, "affinity or quota below the core count wins");
        assert.equal(defaultThreads({...facts.cpu, physicalCores: null}), 4, "without topology: every CPU available");
    }));

    it("returns zeros and nulls for an empty tree instead of throwing", () => withTree({}, async (root) => {
        const facts = await probeDevice({root});
        assert.equal(facts.memory.totalBytes, 0);
        assert.equal(facts.memory.availableBytes, 0);
        assert.deepEqual(facts.memory.cgroup, {
            version: null, limitBytes: null, usageBytes: null, inactiveFileBytes: null, headroomBytes: null, swapLimitBytes: null, path: null
        });
        assert.deepEqual(facts.cpu, {logical: 1, available: 1, quota: null, physicalCores: null, model: null});
        assert.deepEqual(facts.board, {arch: "unknown", simd: [], model: null, vendor: null, isRaspberryPi: false});
        assert.equal(await readTemperatureC(root), null);
    }));

    it("walks up a cgroup v2 tree: a parent's lower limit, memory.high and cpu.max bind the child", () => withTree({
        "proc/meminfo": "MemTotal: 8000000 kB\nMemFree: 6000000 kB\nMemAvailable: 7000000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        "proc/self/cgroup": "0::/parent.slice/child.service\n",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
        "sys/fs/cgroup/parent.slice/memory.max": "3221225472\n",
        "sys/fs/cgroup/parent.slice/memory.high": "2147483648\n",
        "sys/fs/cgroup/parent.slice/memory.current": "1073741824\n",
        "sys/fs/cgroup/parent.slice/cpu.max": "50000 100000\n",
        "sys/fs/cgroup/parent.slice/child.service/memory.max": "4294967296\n",
        "sys/fs/cgroup/parent.slice/child.service/memory.current": "104857600\n",
        "sys/fs/cgroup/parent.slice/child.service/cpu.max": "max 100000\n"
    }, async (root) => {
        const facts = await probeDevice({root});
        assert.equal(facts.memory.cgroup.limitBytes, 2_147_483_648, "memory.high of the parent is the tightest");
        assert.equal(facts.memory.cgroup.headroomBytes, 1_073_741_824, "parent limit minus the parent's usage");
        assert.equal(facts.memory.cgroup.path, "/parent.slice");
        assert.equal(facts.cpu.quota, 0.5);
        assert.equal(facts.cpu.available, 1, "half a CPU still runs one thread");
    }));

    it("treats the cgroup v1 'unlimited' sentinel as no limit and falls back from a missing MemAvailable", () => withTree({
        "proc/meminfo": "MemTotal: 1000 kB\nMemFree: 100 kB\nActive(file): 200 kB\nInactive(file): 300 kB\nSReclaimable: 50 kB\n",
        "proc/self/cgroup": "4:memory:/\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
        "sys/fs/cgroup/memory/memory.usage_in_bytes": "5000\n"
    }, async (root) => {
        const facts = await probeDevice({root});
        assert.equal(facts.memory.cgroup.version, 1);
        assert.equal(facts.memory.cgroup.limitBytes, null);
        assert.equal(facts.memory.availableBytes, 650 * KiB, "MemFree + file cache + reclaimable slab");
    }));

    it("reports the hottest plausible thermal zone", () => withTree({
        "sys/class/thermal/thermal_zone0/temp": "41000\n",
        "sys/class/thermal/thermal_zone1/temp": "67500\n",
        "sys/class/thermal/thermal_zone2/temp": "-273000\n",
        "sys/class/thermal/cooling_device0/cur_state": "1\n"
    }, async (root) => {
        assert.equal(await readTemperatureC(root), 67.5);
    }));

    it("counts CPU lists", () => {
        assert.equal(parseCpuList("0-3"), 4);
        assert.equal(parseCpuList("0-3,6,8-9"), 7);
        assert.equal(parseCpuList("1"), 1);
        assert.equal(parseCpuList(""), null);
        assert.equal(parseCpuList("3-1"), null);
        assert.equal(parseCpuList(undefined), null);
    });
});

describe("the board: what the machine is, and who made it", () => {
    const x86 = {"proc/cpuinfo": "processor\t: 0\nmodel name\t: Intel(R) Core(TM) i5-8500T CPU @ 2.10GHz\nflags\t\t: fpu lm\n"};

    it("takes the DMI product name and vendor of a PC", async () => {
        await withTree({...x86, "sys/class/dmi/id/product_name": "ThinkCentre M720q\n", "sys/class/dmi/id/sys_vendor": "LENOVO\n"}, async (root) => {
            const facts = await probeDevice({root});
            assert.deepEqual(facts.board, {arch: "x64", simd: [], model: "ThinkCentre M720q", vendor: "LENOVO", isRaspberryPi: false});
            assert.equal(facts.cpu.model, "Intel(R) Core(TM) i5-8500T CPU @ 2.10GHz");
        });
    });

    it("leaves out what firmware filled with placeholders", async () => {
        await withTree({...x86, "sys/class/dmi/id/product_name": "To Be Filled By O.E.M.\n", "sys/class/dmi/id/sys_vendor": "System manufacturer\n"},
            async (root) => assert.deepEqual((await probeDevice({root})).board, {arch: "x64", simd: [], model: null, vendor: null, isRaspberryPi: false}));
    });
});

describe("probeDevice on this machine", () => {
    it("gives sane live facts quickly", async () => {
        const started = performance.now();
        const facts = await probeDevice();
        const elapsed = performance.now() - started;
        assert.ok(facts.memory.totalBytes > 0, "MemTotal read");
        assert.ok(facts.memory.availableBytes > 0 && facts.memory.availableBytes <= facts.memory.totalBytes, "0 < MemAvailable <= MemTotal");
        assert.ok(facts.memory.constrainedBytes === null || facts.memory.constrainedBytes > 0);
        const cg = facts.memory.cgroup;
        if (cg.limitBytes !== null && cg.headroomBytes !== null) assert.ok(cg.headroomBytes <= cg.limitBytes);
        assert.ok(facts.cpu.available >= 1 && facts.cpu.available <= facts.cpu.logical, `available ${facts.cpu.available} of ${facts.cpu.logical}`);
        assert.equal(facts.board.arch, process.arch);
        const temperature = await readTemperatureC();
        assert.ok(temperature === null || (temperature > -40 && temperature < 150));
        assert.ok(elapsed < 1000, `probe took ${elapsed.toFixed(0)} ms`);
    });
});
