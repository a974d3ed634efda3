# The REPL of one e2b code-interpreter context (exec-gateway/src/e2b/interpreter.rs starts it as a
# background process: python3 -u -c <this> CWD). It needs only what python3-minimal has (no json
# module). Requests on stdin, byte-counted:
#   "<id> <code bytes> <env count>\n", then per variable "<key bytes> <value bytes>\n" KEY VALUE,
#   then the code (UTF-8).
# Answers are e2b's execution messages as JSON lines on the original stdout, each with the
# request's "id": number_of_executions, stdout, stderr, result, error, end_of_execution. The code's
# own fds 1 and 2 (and its child processes') go to pipes read by threads, so nothing a user's code
# prints can be mistaken for a protocol line. Globals persist between requests.
import ast, datetime, linecache, os, sys, threading, traceback

if len(sys.argv) > 1 and sys.argv[1]:
    os.makedirs(sys.argv[1], exist_ok=True)
    os.chdir(sys.argv[1])
proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
lock = threading.Lock()
current = {"id": None}
MARK = "\x00airlock-interpreter-flush\x00"


def enc(v):
    if v is True or v is False or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(enc(str(k)) + ":" + enc(x) for k, x in v.items()) + "}"
    out = ['"']
    for ch in str(v):
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def send(msg):
    msg["id"] = current["id"]
    with lock:
        proto.write(enc(msg) + "\n")
        proto.flush()


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def pump(fd, kind, flushed):
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace", newline="") as f:
        while True:
            line = f.readline(65536)  # long lines go out in pieces
            if not line:
                return
            if MARK in line:
                before = line.split(MARK, 1)[0]
                if before:
                    send({"type": kind, "text": before, "timestamp": now()})
                flushed.set()
                continue
            send({"type": kind, "text": line, "timestamp": now()})


flushed = {}
for fd, kind in ((1, "stdout"), (2, "stderr")):
    r, w = os.pipe()
    os.dup2(w, fd)
    os.close(w)
    flushed[kind] = threading.Event()
    threading.Thread(target=pump, args=(r, kind, flushed[kind]), daemon=True).start()
sys.stdout = sys.__stdout__ = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
sys.stderr = sys.__stderr__ = os.fdopen(2, "w", buffering=1, encoding="utf-8", closefd=False)

env_globals = {"__name__": "__main__", "__builtins__": __builtins__}
count = 0
stdin = os.fdopen(os.dup(0), "rb")
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)


def read_request():
    head = stdin.readline()
    if not head:
        return None
    rid, code_len, env_count = head.decode("utf-8", "replace").split()
    env = {}
    for _ in range(int(env_count)):
        klen, vlen = stdin.readline().split()
        k = stdin.read(int(klen)).decode("utf-8", "replace")
        env[k] = stdin.read(int(vlen)).decode("utf-8", "replace")
    return rid, stdin.read(int(code_len)).decode("utf-8", "replace"), env


while True:
    req = read_request()
    if req is None:
        break
    current["id"], code, env = req
    count += 1
    send({"type": "number_of_executions", "execution_count": count})
    saved = {k: os.environ.get(k) for k in env}
    outcome = []
    try:
        os.environ.update(env)
        name = "<cell %d>" % count
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        tree = ast.parse(code, name, "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, name, "exec"), env_globals)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), name, "eval"), env_globals)
            if value is not None:
                outcome.append({"type": "result", "text": repr(value), "is_main_result": True, "extra": {}})
    except BaseException as e:  # noqa: B902 - a cell's SystemExit or KeyboardInterrupt is its error
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None))
        outcome.append({"type": "error", "name": type(e).__name__, "value": str(e), "traceback": tb})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    # Everything the cell printed comes before its result, as in Jupyter. The marker goes to fds
    # 1 and 2 directly: a cell may have replaced or closed sys.stdout.
    for fd, kind, stream in ((1, "stdout", sys.__stdout__), (2, "stderr", sys.__stderr__)):
        flushed[kind].clear()
        try:
            if stream is not None:
                stream.flush()
            os.write(fd, (MARK + "\n").encode())
        except (OSError, ValueError):
            continue
        flushed[kind].wait(10)
    for msg in outcome:
        send(msg)
    send({"type": "end_of_execution"})
