/**
 * A TCP proxy between the daemon and the broker that the fault suite controls. `blackhole()` drops
 * every byte both ways without closing anything: to each end the peer is silent, no FIN or RST
 * arrives — what a Wi-Fi drop or a dead NAT entry looks like (a half-open connection). Connections
 * opened meanwhile are accepted and never answered. `heal()` forwards again; connections that
 * were opened during the blackhole are dropped then, like a stale handshake after the link is back.
 */
import {connect, createServer, type Socket} from "node:net";

export interface TcpProxy {
    port: number;
    url: string;
    /** connections opened through the proxy so far */
    connections(): number;
    /** bytes dropped while blackholed */
    dropped(): number;
    blackhole(): void;
    heal(): void;
    close(): Promise<void>;
}

export async function startTcpProxy(target: {host: string; port: number}): Promise<TcpProxy> {
    let blackholed = false;
    let opened = 0;
    let droppedBytes = 0;
    const sockets = new Set<Socket>();
    /** client sockets accepted while blackholed: never connected upstream */
    const stranded = new Set<Socket>();
    const track = (s: Socket): void => {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => s.destroy());
    };
    const server = createServer((client) => {
        opened++;
        track(client);
        if (blackholed) {
            stranded.add(client);
            client.on("data", (d: Buffer) => { droppedBytes += d.length; });
            return;
        }
        const upstream = connect(target.port, target.host);
        track(upstream);
        const forward = (from: Socket, to: Socket): void => {
            from.on("data", (d: Buffer) => {
                if (blackholed) droppedBytes += d.length;
                else to.write(d);
            });
            from.on("close", () => to.destroy());
        };
        forward(client, upstream);
        forward(upstream, client);
    });
    await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve());
    });
    const port = (server.address() as {port: number}).port;
    return {
        port, url: `mqtt://127.0.0.1:${port}`,
        connections: () => opened,
        dropped: () => droppedBytes,
        blackhole: () => { blackholed = true; },
        heal: () => {
            blackholed = false;
            for (const s of stranded) s.destroy();
            stranded.clear();
        },
        close: async () => {
            for (const s of sockets) s.destroy();
            await new Promise<void>((resolve) => server.close(() => resolve()));
        }
    };
}
