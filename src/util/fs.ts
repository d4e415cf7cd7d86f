import {closeSync, fsyncSync, openSync} from "node:fs";

/** A rename survives a power cut only once the directory entry itself is on disk: fsync the directory. */
export function syncDir(dir: string): void {
    const fd = openSync(dir, "r");
    try {
        fsyncSync(fd);
    } catch {
        // some filesystems refuse fsync on a directory; the rename is still atomic
    } finally {
        closeSync(fd);
    }
}
