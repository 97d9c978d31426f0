/* inkloop _hmt tracker */
((w,d,n)=>{
let q=w._hmt,C=w.crypto,S=sessionStorage,E=(d.currentScript||{dataset:{}}).dataset.api||"/collect",
B=[],P=[],V={},U="",A=1,T=0,D=1e3,K=Promise.resolve(),
I=()=>"10000000-1000-4000-8000-100000000000".replace(/[018]/g,c=>(c^C.getRandomValues(new Uint8Array(1))[0]&15>>c/4).toString(16)),
H=l=>l==null||/^[\w.:-]{0,24}$/.test(l)?l:C.subtle?C.subtle.digest("SHA-256",new TextEncoder().encode(l)).then(h=>"h:"+[...new Uint8Array(h,0,8)].map(b=>(b+256).toString(16).slice(1)).join("")):"h:",
L=t=>{T||(T=setTimeout(F,t||D))},
F=b=>{T=0;B.length&&P.push(B.splice(0,50));P.forEach(e=>O(e,b))},
R=e=>{P=P.filter(x=>x!=e)},
O=(e,b)=>{let s=(S._hms||"").split("|"),t=Date.now(),x;t-s[1]<18e5||(s[0]=I());S._hms=s[0]+"|"+t;
x=JSON.stringify({sid:s[0],uid:U,lang:n.language,scr:screen.width+"x"+screen.height,ev:e});
if(b)return n.sendBeacon(E,x)&&R(e);e.f||(e.f=fetch(E,{method:"POST",body:x,keepalive:!0}).then(r=>{if(r.ok||r.status==400)R(e),D=1e3;else throw 0}).catch(()=>L(D=Math.min(D*2,3e4))).finally(()=>e.f=0))},
M=(o,l)=>{K=K.then(()=>H(l)).then(h=>{o.id=I();o.t=Date.now();o.url=o.url||location.href;o.ref=d.referrer;o.cv=V;o.l=h;B.push(o);L()})},
G=([c,a,b,l,v,r])=>
c=="_trackEvent"?M({type:"event",c:a,a:b,v,rid:r},l==null?l:""+l):
c=="_trackPageview"?M({type:"pageview",url:a}):
c=="_setUserId"?U=""+a:
c=="_setCustomVar"?V={...V,[b]:""+l}:
c=="_setAutoPageview"&&(A=a);
if(q&&q.k)return;w._hmt={k:1,push:(...a)=>a.forEach(G)};(q||[]).forEach(G);A&&G(["_trackPageview"]);
d.addEventListener("visibilitychange",()=>d.hidden&&F(1));w.addEventListener("pagehide",()=>F(1))
})(window,document,navigator);
