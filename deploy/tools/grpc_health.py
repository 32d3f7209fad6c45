#!/usr/bin/python3
"""grpc.health.v1.Health/Check against ADDR until it answers SERVING (or TIMEOUT seconds pass).

    grpc_health.py ADDR [SERVICE] [TIMEOUT]

Stubs are generated from Debian's grpc-proto (/usr/share/grpc-proto) into a temporary folder.
Prints the status; exit 0 only for SERVING. Run with /usr/bin/python3 (Debian's python3-grpcio).
"""
import importlib
import shutil
import subprocess
import sys
import tempfile
import time

import grpc


def main():
    addr = sys.argv[1]
    service = sys.argv[2] if len(sys.argv) > 2 else ""
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60
    with tempfile.TemporaryDirectory() as tmp:
        # Compiled under another file name: a generated grpc/health/... package would clash
        # with grpcio's own "grpc" package.
        shutil.copy("/usr/share/grpc-proto/grpc/health/v1/health.proto", f"{tmp}/health_check.proto")
        subprocess.run(["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                        "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                        f"{tmp}/health_check.proto"], check=True)
        sys.path.insert(0, tmp)
        pb = importlib.import_module("health_check_pb2")
        pb_grpc = importlib.import_module("health_check_pb2_grpc")
        stub = pb_grpc.HealthStub(grpc.insecure_channel(addr))
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                r = stub.Check(pb.HealthCheckRequest(service=service), timeout=3)
                last = pb.HealthCheckResponse.ServingStatus.Name(r.status)
                if r.status == pb.HealthCheckResponse.SERVING:
                    print(f"{addr} health({service!r}): {last}")
                    return 0
            except grpc.RpcError as e:
                last = e.code().name
            time.sleep(0.5)
        print(f"{addr} health({service!r}): {last} after {timeout:.0f} s")
        return 1


if __name__ == "__main__":
    sys.exit(main())
