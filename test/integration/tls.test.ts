/**
 * Issue 6, broker security: a Mosquitto with a mutual-TLS listener and a password file, the daemon
 * as a child process. The right CA connects and answers; a wrong CA, an expired broker certificate
 * and a bad password each give one clear error line and retries with backoff; the password shows
 * up nowhere it could leak.
 */
import assert from "node:assert/strict";
import {mkdir, readFile, writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {freePort} from "../support/broker.js";
import {runCli, type DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import {TestClient} from "../support/mqtt-client.js";
import {SCRIPTED_ANSWER} from "../support/models.js";
import {makePasswordFile, makeTestPki, type TestPki} from "../support/tls.js";

const PASSWORD = "pw-7f3a9c1e-do-not-leak";
const TESTER = {username: "tester", password: "tester-pw"};

describe("broker security: TLS and passwords", () => {
    let h: Harness;
    let dir: string;
    let pki: TestPki;
    let tlsPort: number;
    let expiredPort: number;
    let client: TestClient;
    let passwordFile: string;
    let daemons: readonly DaemonProcess[];

    /** a daemon on the TLS listener with a client certificate; `args` adds or overrides */
    const start = (device: string, args: string[], port = tlsPort, env: NodeJS.ProcessEnv = {}): Promise<DaemonProcess> =>
        h.spawn({device, brokerUrl: `mqtts://127.0.0.1:${port}`, env,
            args: ["--mqtt-cert", pki.clientCert, "--mqtt-key", pki.clientKey, "--mqtt-username", "qwen-edge", ...args]});

    before(async () => {
        // The broker's TLS listeners and password file are made in the temp directory before it starts.
        h = await Harness.start({prefix: "qe-tls-", client: TESTER, subscribe: ["#"], broker: async (path) => {
            dir = path;
            pki = await makeTestPki(dir);
            passwordFile = join(dir, "mqtt-password");
            await writeFile(passwordFile, `${PASSWORD}\n`, {mode: 0o600});
            await makePasswordFile(join(dir, "mosquitto.passwd"), {"qwen-edge": PASSWORD, [TESTER.username]: TESTER.password});
            tlsPort = await freePort();
            expiredPort = await freePort();
            const tlsListener = (port: number, cert: string): string[] => [
                `listener ${port} 127.0.0.1`, `cafile ${pki.ca}`, `certfile ${cert}`, `keyfile ${pki.serverKey}`, "require_certificate true"
            ];
            return {extraConfig: [
                "allow_anonymous false", `password_file ${join(dir, "mosquitto.passwd")}`,
                ...tlsListener(tlsPort, pki.serverCert), ...tlsListener(expiredPort, pki.expiredServerCert)
            ]};
        }});
        ({client, daemons} = h);
    });

    after(() => h?.dispose());

    it("connects with the right CA, a client certificate and the password file, and answers", async () => {
        const d = await start("tls-ok", ["--mqtt-ca", pki.ca, "--mqtt-password-file", passwordFile]);
        await client.waitFor("tls-ok online", (m) => m.topic === "qwen-edge/tls-ok/status" && m.json?.state === "online");
        await client.publish("qwen-edge/tls-ok/request", JSON.stringify({id: "tls-1", prompt: "hello", replyTo: "replies/tls-1"}));
        const reply = await client.waitFor("reply to tls-1", (m) => m.topic === "replies/tls-1");
        assert.equal(reply.json?.status, "ok");
        assert.equal(reply.json?.text, SCRIPTED_ANSWER);
        const creds = d.logs.find((l) => l.message === "mqtt credentials" && l.password !== undefined);
        assert.deepEqual(creds && {password: creds.password, tls: creds.tls}, {password: "passwordFile", tls: {ca: true, clientCert: true}});
    });

    it("`qwen-edge ask` connects with the same TLS and password-file options", async () => {
        const testerPassword = join(dir, "tester-password");
        await writeFile(testerPassword, TESTER.password, {mode: 0o600});
        const ask = runCli(["ask", "--device", "tls-ok", "--timeout", "20", "--mqtt-url", `mqtts://127.0.0.1:${tlsPort}`,
            "--mqtt-ca", pki.ca, "--mqtt-cert", pki.clientCert, "--mqtt-key", pki.clientKey,
            "--mqtt-username", TESTER.username, "--mqtt-password-file", testerPassword, "hello over TLS"]);
        assert.equal((await ask.exited).code, 0, ask.stderr());
        assert.equal(ask.stdout().trim(), SCRIPTED_ANSWER);
        const refused = runCli(["ask", "--device", "tls-ok", "--mqtt-url", `mqtts://127.0.0.1:${tlsPort}`, "--mqtt-ca", pki.wrongCa, "hi"]);
        assert.equal((await refused.exited).code, 1);
        assert.match(refused.stderr(), /is not signed by the CA in mqtt\.ca \(SELF_SIGNED_CERT_IN_CHAIN\)/);
    });

    it("reads the password from the systemd credential when mqtt.passwordFile is empty", async () => {
        const credentials = join(dir, "credentials");
        await mkdir(credentials);
        await writeFile(join(credentials, "mqtt-password"), PASSWORD, {mode: 0o400});
        const d = await start("tls-cred", ["--mqtt-ca", pki.ca], tlsPort, {CREDENTIALS_DIRECTORY: credentials});
        await client.waitFor("tls-cred online", (m) => m.topic === "qwen-edge/tls-cred/status" && m.json?.state === "online");
        assert.equal(d.logs.find((l) => l.message === "mqtt credentials" && l.password !== undefined)?.password, "systemd-credential");
    });

    it("never shows the password: not in a log line, a published message, argv or the environment", async () => {
        const running = daemons.filter((d) => d.child.exitCode === null);
        assert.ok(running.length >= 2, "the daemons of the tests above are still running");
        for (const d of running) {
            assert.ok(!d.stdout().includes(PASSWORD) && !d.stderr().includes(PASSWORD), "password in the daemon's output");
            const pid = d.child.pid ?? 0;
            const cmdline = await readFile(`/proc/${pid}/cmdline`);
            const environ = await readFile(`/proc/${pid}/environ`);
            assert.ok(!cmdline.includes(PASSWORD), "password in /proc/PID/cmdline");
            assert.ok(!environ.includes(PASSWORD), "password in /proc/PID/environ");
        }
        assert.ok(client.received.length > 3, "the test client saw status/info/health traffic");
        const leaking = client.received.filter((m) => m.payload.includes(PASSWORD));
        assert.deepEqual(leaking.map((m) => m.topic), [], "password in a published message");
    });

    /** Waits for `attempts` reconnects, then checks: one error line, delays growing up to the cap. */
    const assertOneErrorAndBackoff = async (d: DaemonProcess, what: string, attempts = 4): Promise<Record<string, unknown>> => {
        await d.waitForLog(`reconnect attempt ${attempts} after ${what}`, (l) => l.message === "mqtt reconnect scheduled" && l.attempt === attempts, 30_000);
        const errors = d.logs.filter((l) => l.level === "error");
        assert.equal(errors.length, 1, `exactly one error line for ${what}: ${JSON.stringify(errors)}`);
        const delays = d.logs.filter((l) => l.message === "mqtt reconnect scheduled").map((l) => Number(l.inMs));
        // baseArgs: 200 ms doubling to a 1000 ms cap, +-20 % jitter
        assert.ok((delays[0] ?? 0) >= 160 && (delays[0] ?? 0) <= 240, `first delay ${delays[0]}`);
        assert.ok((delays[2] ?? 0) > (delays[0] ?? 0) * 2, `delays grow: ${delays.join(", ")}`);
        assert.ok(delays.every((ms) => ms <= 1200), `delays capped at mqtt.reconnectMaxMs: ${delays.join(", ")}`);
        assert.equal(d.child.exitCode, null, "the daemon keeps running");
        return errors[0] ?? {};
    };

    describe("refused connections (the three daemons run side by side)", () => {
        let wrongCa: DaemonProcess;
        let expired: DaemonProcess;
        let badPassword: DaemonProcess;

        before(async () => {
            const wrong = join(dir, "wrong-password");
            await writeFile(wrong, "not-the-password\n", {mode: 0o600});
            // NODE_TLS_REJECT_UNAUTHORIZED=0 must not switch verification off: rejectUnauthorized is explicit.
            wrongCa = await start("tls-wrong-ca", ["--mqtt-ca", pki.wrongCa, "--mqtt-password-file", passwordFile], tlsPort,
                {NODE_TLS_REJECT_UNAUTHORIZED: "0"});
            expired = await start("tls-expired", ["--mqtt-ca", pki.ca, "--mqtt-password-file", passwordFile], expiredPort);
            badPassword = await start("tls-bad-pw", ["--mqtt-ca", pki.ca, "--mqtt-password-file", wrong]);
        });

        it("a wrong CA: one broker_tls error naming mqtt.ca, retries with backoff, even with NODE_TLS_REJECT_UNAUTHORIZED=0", async () => {
            const error = await assertOneErrorAndBackoff(wrongCa, "a wrong CA");
            assert.equal(error.message, "mqtt connection problem");
            assert.equal(error.code, "broker_tls");
            assert.match(String(error.reason), /^the broker's certificate at mqtts:\/\/127\.0\.0\.1:\d+ is not signed by the CA in mqtt\.ca \(SELF_SIGNED_CERT_IN_CHAIN\): set mqtt\.ca to the CA that signed the broker's certificate$/);
            assert.ok(!client.received.some((m) => m.topic === "qwen-edge/tls-wrong-ca/status"), "nothing reached the broker");
        });

        it("an expired broker certificate: one broker_tls error saying so, retries with backoff", async () => {
            const error = await assertOneErrorAndBackoff(expired, "an expired certificate");
            assert.equal(error.code, "broker_tls");
            assert.match(String(error.reason), /^the broker's certificate at mqtts:\/\/127\.0\.0\.1:\d+ has expired \(CERT_HAS_EXPIRED\)/);
        });

        it("a bad password: one broker_auth error (CONNACK 135), retries with backoff rather than giving up", async () => {
            const error = await assertOneErrorAndBackoff(badPassword, "a bad password");
            assert.equal(error.code, "broker_auth");
            assert.match(String(error.reason), /^the broker at mqtts:\/\/127\.0\.0\.1:\d+ refused the connection \(CONNACK 135, Not authorized\): not authorized; check mqtt\.username and the password/);
            assert.ok(!badPassword.stdout().includes("not-the-password"), "the wrong password is not logged either");
        });
    });

    it("no client certificate where the broker requires one: says to set mqtt.cert and mqtt.key", async () => {
        const d = await h.spawn({device: "tls-no-cert", brokerUrl: `mqtts://127.0.0.1:${tlsPort}`, args: ["--mqtt-ca", pki.ca]});
        const error = await d.waitForLog("mqtt connection problem", (l) => l.message === "mqtt connection problem");
        assert.equal(error.code, "broker_tls");
        assert.match(String(error.reason), /requires a client certificate \(ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED\): set mqtt\.cert and mqtt\.key$/);
    });
});
