"""An SFTP server that stores something else than it is sent: OpenSSH's own sftp-server,
behind a filter that flips the middle byte of every write's data. A remote disk, or a
server, that damages what it stores; the test sshd runs it as its sftp subsystem
(tests/sshd.py, `running_sshd(sftp_subsystem=...)`), so the client's transfer succeeds and
only reading the copy back can tell.

Standard library only: sshd starts it with the interpreter of the test run.
"""

import struct
import subprocess
import sys

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
SSH_FXP_WRITE = 6


def read_exactly(stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def damaged(packet: bytes) -> bytes:
    """The packet, with its data's middle byte flipped when it is a write (type, request id,
    handle, offset, data)."""
    if not packet or packet[0] != SSH_FXP_WRITE:
        return packet
    (handle_length,) = struct.unpack(">I", packet[5:9])
    start = 9 + handle_length + 8 + 4
    if len(packet) <= start:
        return packet
    data = bytearray(packet)
    data[start + (len(packet) - start) // 2] ^= 0xFF
    return bytes(data)


def main() -> None:
    server = subprocess.Popen([SFTP_SERVER], stdin=subprocess.PIPE, stdout=sys.stdout.buffer)
    source = sys.stdin.buffer
    try:
        while header := read_exactly(source, 4):
            packet = read_exactly(source, struct.unpack(">I", header)[0])
            if not packet:
                break
            server.stdin.write(header + damaged(packet))
            server.stdin.flush()
    except BrokenPipeError:
        pass
    finally:
        server.stdin.close()
        server.wait()


if __name__ == "__main__":
    main()
