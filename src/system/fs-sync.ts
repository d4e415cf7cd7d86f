/** fsync of a directory: a rename (or a new file) is durable only once its directory entry is synced. */
import {closeSync, fsyncSync, openSync} from "node:fs";

export function syncDir(dir: string): void {
    const fd = openSync(dir, "r");
    try {
        fsyncSync(fd);
    } catch {
        // some file systems refuse fsync on a directory; the rename is still atomic
    } finally {
        closeSync(fd);
    }
}
