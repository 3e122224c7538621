# shellcheck shell=bash
# How a scaled-out local stack names its instances and spreads their ports,
# for deploy/lib/local.sh and the scripts that drive such a stack
# (tests/cluster): the k-th instance of NAME (k from 0) is NAME, then
# NAME@1, NAME@2 ...; each of its ports is k strides above the first's.
#
#   . deploy/lib/instances.sh

# instance_name NAME K: the K-th instance of NAME
instance_name() { if [ "$2" = 0 ]; then echo "$1"; else echo "$1@$2"; fi; }

# instances NAME COUNT: the names of its COUNT instances, a line each
instances()
{
    local k
    for ((k = 0; k < $2; k++)); do instance_name "$1" "$k"; done
}

# instance_index NAME@K: K (0 for NAME)
instance_index() { case $1 in *@*) echo "${1##*@}" ;; *) echo 0 ;; esac; }

# strided_port PORT INSTANCE STRIDE: the port of INSTANCE whose first
# instance has PORT
strided_port() { echo $(($1 + $(instance_index "$2") * $3)); }
