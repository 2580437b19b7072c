# shellcheck shell=bash
# The Debian mirror of this host's apt configuration, for scripts/install-deps.sh,
# scripts/build-image.sh and scripts/test-packages.sh. The mirror is never written in
# the repository: callers take --mirror or KOWABUNGA_MIRROR first.
#
# host_sources:   "URI SUITES" for each enabled "deb" source (/etc/apt/sources.list,
#                 sources.list.d/*.list one-line, *.sources deb822).
# host_mirror:    the first URI of a release suite (bookworm, trixie, stable, sid),
#                 not -security. Prints nothing when none is found.
# host_security:  the first URI of a -security suite, or nothing.
host_sources() {
  local f
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
  return 0
}

host_mirror() {
  host_sources | awk '$0 !~ /security/ && $0 ~ /(bookworm|trixie|stable|sid)/ {print $1; exit}'
}

host_security() {
  host_sources | awk '$0 ~ /-security/ {print $1; exit}'
}
