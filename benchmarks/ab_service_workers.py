"""Two ways to use both cores for encrypt_many batches of 1000 1 KiB records:
threads sharing one keyring (what an executor in the event loop would do) vs processes."""
import os, time, tempfile, threading, multiprocessing as mp
from pathlib import Path
from keysplit import Keyring
N=1000; SECS=3.0
subj=[f"user/{i:04d}" for i in range(N)]; pts=[os.urandom(1024) for _ in range(N)]
def loop(u, out):
    n=0; t0=time.perf_counter()
    while time.perf_counter()-t0<SECS:
        u.encrypt_many(subj,pts); n+=N
    out.append(n/(time.perf_counter()-t0))
def proc(path, sh, q):
    u=Keyring.open(path).unseal(sh); u.encrypt_many(subj,pts); out=[]; loop(u,out); q.put(out[0])
if __name__=="__main__":
    with tempfile.TemporaryDirectory() as t:
        kr,sh=Keyring.create(Path(t)/"kr",2,["a","b"]); shares=[sh["a"],sh["b"]]
        u=kr.unseal(shares); u.encrypt_many(subj,pts)
        for k in (1,2,4):
            out=[]; th=[threading.Thread(target=loop,args=(u,out)) for _ in range(k)]
            [x.start() for x in th]; [x.join() for x in th]
            print(f"threads={k}: {sum(out):,.0f} rec/s")
        for k in (1,2,4):
            q=mp.Queue(); ps=[mp.Process(target=proc,args=(kr.path,shares,q)) for _ in range(k)]
            [p.start() for p in ps]; r=sum(q.get() for _ in ps); [p.join() for p in ps]
            print(f"processes={k}: {r:,.0f} rec/s")
