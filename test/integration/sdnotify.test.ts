/**
 * Issue 6, sd_notify: the real daemon, a test NOTIFY_SOCKET (a python3 datagram receiver standing
 * in for PID 1) and the real `systemd-notify`. READY=1 once online, WATCHDOG=1 at half of
 * WATCHDOG_USEC, STOPPING=1 on SIGTERM, in that order; STATUS= lines say what is going on.
 */
import assert from "node:assert/strict";
import {after, before, describe, it} from "node:test";
import {SdNotifier} from "../../src/system/sdnotify.js";
import {createLogger} from "../../src/log.js";
import {freePort, startBroker, type Broker} from "../support/broker.js";
import {spawnDaemon, tempDir, type DaemonProcess} from "../support/daemon.js";
import {modelFile} from "../support/models.js";
import {startNotifySocket, type Notification, type NotifySocket} from "../support/notify-socket.js";
import {Writable} from "node:stream";

const has = (key: string) => (n: Notification): boolean => n.fields[key] !== undefined;
/** the STATUS= in force when `at` arrived (READY=1 leaves STATUS out when it has not changed) */
const statusAt = (received: Notification[], at: Notification): string | undefined =>
    received.slice(0, received.indexOf(at) + 1).reverse().find(has("STATUS"))?.fields.STATUS;

describe("sd_notify from the daemon", () => {
    let broker: Broker;
    let state: {path: string; dispose: () => Promise<void>};
    let model: string;
    const sockets: NotifySocket[] = [];
    const daemons: DaemonProcess[] = [];

    const run = async (device: string, env: NodeJS.ProcessEnv, brokerUrl = broker.url): Promise<DaemonProcess> => {
        const d = spawnDaemon({brokerUrl, modelPath: model, deviceId: device, stateDir: `${state.path}/${device}`, env});
        daemons.push(d);
        return d;
    };
    const socket = async (options: {abstract?: boolean} = {}): Promise<NotifySocket> => {
        const s = await startNotifySocket(options);
        sockets.push(s);
        return s;
    };

    before(async () => {
        broker = await startBroker();
        state = await tempDir("qe-sdnotify-");
        model = await modelFile("scripted");
    });

    after(async () => {
        for (const d of daemons) await d.kill();
        for (const s of sockets) await s.dispose();
        await broker?.dispose();
        await state?.dispose();
    });

    it("sends READY=1, then WATCHDOG=1 every WATCHDOG_USEC/2, then STOPPING=1, and exits 0", async () => {
        const notify = await socket();
        const d = await run("notify-order", {NOTIFY_SOCKET: notify.address, WATCHDOG_USEC: "600000"});
        const ready = await notify.waitFor("READY=1", has("READY"));
        assert.equal(statusAt(notify.received, ready), "online; broker connected");
        await notify.waitFor("three WATCHDOG=1", () => notify.received.filter(has("WATCHDOG")).length >= 3, 10_000);
        assert.equal((await d.term()).code, 0);
        await notify.waitFor("STOPPING=1", has("STOPPING"));
        const order = notify.received.map((n) => (n.fields.READY ? "READY" : n.fields.WATCHDOG ? "WATCHDOG" : n.fields.STOPPING ? "STOPPING" : "STATUS"))
            .filter((kind) => kind !== "STATUS");
        const firstWatchdog = order.indexOf("WATCHDOG");
        assert.equal(order[0], "READY", order.join(" "));
        assert.ok(firstWatchdog > 0 && order.lastIndexOf("WATCHDOG") < order.indexOf("STOPPING"), order.join(" "));
        assert.equal(order.at(-1), "STOPPING", "nothing after STOPPING=1");
        assert.equal(order.filter((k) => k === "READY").length, 1);
        // 300 ms apart on average (half of 600 ms); one spawn may be slow on a busy machine
        const pings = notify.received.filter(has("WATCHDOG")).map((n) => n.at);
        const gaps = pings.slice(1).map((t, i) => t - (pings[i] ?? t));
        const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
        assert.ok(mean > 200 && mean < 550, `ping gaps ${gaps.join(", ")} ms`);
        assert.match(notify.received.find(has("STOPPING"))?.fields.STATUS ?? "", /^stopping \(SIGTERM\)/);
    });

    it("puts the broker problem in STATUS= and still reports READY once the model is loaded", async () => {
        const notify = await socket();
        const port = await freePort();
        await run("notify-nobroker", {NOTIFY_SOCKET: notify.address}, `mqtt://127.0.0.1:${port}`);
        const ready = await notify.waitFor("READY=1", has("READY"));
        const status = statusAt(notify.received, ready) ?? "";
        assert.equal(status, `online; broker: no MQTT broker is listening at mqtt://127.0.0.1:${port}: install one ` +
            "(sudo apt-get install mosquitto) or set mqtt.url to your broker; retrying");
        assert.ok(notify.received.filter(has("STATUS")).some((n) => n.fields.STATUS?.startsWith("loading model tiny-scripted")));
        assert.equal(notify.received.filter(has("WATCHDOG")).length, 0, "no WATCHDOG_USEC, no pings");
    });

    it("works with an abstract-namespace socket (@name) and sends no pings when WATCHDOG_PID is another process", async () => {
        const notify = await socket({abstract: true});
        const d = await run("notify-abstract", {NOTIFY_SOCKET: notify.address, WATCHDOG_USEC: "400000", WATCHDOG_PID: "1"});
        await notify.waitFor("READY=1 on an abstract socket", has("READY"));
        await new Promise((r) => setTimeout(r, 700));
        assert.equal(notify.received.filter(has("WATCHDOG")).length, 0, "the watchdog belongs to PID 1 here");
        assert.equal((await d.term()).code, 0);
        await notify.waitFor("STOPPING=1", has("STOPPING"));
    });
});

describe("SdNotifier", () => {
    const quietLog = (lines: Array<Record<string, unknown>>): ReturnType<typeof createLogger> => createLogger("debug", new Writable({
        write(chunk: Buffer, _enc, done): void {
            lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
            done();
        }
    }));

    it("withholds WATCHDOG=1 while the health check fails, says why in STATUS=, and resumes", async () => {
        const notify = await startNotifySocket();
        const lines: Array<Record<string, unknown>> = [];
        let healthy = false;
        const notifier = new SdNotifier({log: quietLog(lines), env: {NOTIFY_SOCKET: notify.address, WATCHDOG_USEC: "200000"},
            check: () => (healthy ? {ok: true} : {ok: false, reason: "1 generation(s) running and none finished for 700 s"})});
        try {
            notifier.start();
            notifier.ready("online");
            await notify.waitFor("unhealthy STATUS", (n) => n.fields.STATUS?.startsWith("unhealthy: 1 generation(s)") === true);
            await new Promise((r) => setTimeout(r, 400));
            assert.equal(notify.received.filter(has("WATCHDOG")).length, 0, "no ping while unhealthy");
            assert.equal(lines.filter((l) => l.level === "error").length, 1, "one error line, not one per tick");
            healthy = true;
            await notify.waitFor("WATCHDOG=1 after recovery", has("WATCHDOG"));
            notifier.stopping("stopping");
            await notifier.stop();
            assert.ok(notify.received.some(has("STOPPING")));
        } finally {
            await notifier.stop();
            await notify.dispose();
        }
    });

    it("is a no-op without NOTIFY_SOCKET, and gives up with one error when systemd-notify is missing", async () => {
        const lines: Array<Record<string, unknown>> = [];
        const off = new SdNotifier({log: quietLog(lines), env: {}});
        off.start();
        off.ready("online");
        assert.equal(off.active, false);
        const missing = new SdNotifier({log: quietLog(lines), env: {NOTIFY_SOCKET: "/nonexistent/notify"}, command: "/nonexistent/systemd-notify"});
        missing.start();
        missing.ready("online");
        missing.status("still online");
        await missing.stop();
        assert.equal(missing.active, false);
        const errors = lines.filter((l) => l.level === "error");
        assert.equal(errors.length, 1, JSON.stringify(lines));
        assert.match(String(errors[0]?.message), /systemd-notify is missing/);
    });
});
