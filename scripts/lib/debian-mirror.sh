# shellcheck shell=bash
# Sourced by scripts/test-packages.sh.
#
# host_mirror: print the first Debian mirror URL of this host's apt sources
# (/etc/apt/sources.list, sources.list.d/*.list one-line and *.sources deb822;
# enabled "deb" entries of a release suite, not -security), as
# scripts/build-image.sh reads them. Prints nothing when none is found. The
# mirror is never written in the repository: callers take --mirror or
# KOWABUNGA_MIRROR first.
host_mirror() {
  local f
  {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -r "$f" ] && awk '$1=="deb"{u="";s=""; for(i=2;i<=NF;i++){ if($i ~ /^\[/){ while($i !~ /\]$/) i++; continue } if(u==""){u=$i}else if(s==""){s=$i} } print u, s}' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -r "$f" ] && awk 'BEGIN{RS="";FS="\n"} { u="";s="";t="";en="yes"
           for(i=1;i<=NF;i++){ line=$i
             if(line ~ /^URIs:/){sub(/^URIs:[ \t]*/,"",line); split(line,a," "); u=a[1]}
             if(line ~ /^Suites:/){sub(/^Suites:[ \t]*/,"",line); s=line}
             if(line ~ /^Types:/){t=line}
             if(line ~ /^Enabled:[ \t]*no/){en="no"} }
           if(u!="" && t ~ /deb([ \t]|$)/ && en=="yes") print u, s }' "$f"
    done
  } | awk '$0 !~ /security/ && $0 ~ /(bookworm|trixie|stable|sid)/ {print $1; exit}'
}
