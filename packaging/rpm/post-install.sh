# barmans3 %post: the state and log directories, owned by the barman user when it exists (this
# package does not create it). The example config is given to barman on the first install only
# ($1 = 1), so an upgrade keeps whatever ownership the admin chose.
owner=root
if getent passwd barman >/dev/null 2>&1; then owner=barman; fi
for d in /var/lib/barmans3 /var/lib/barmans3/queue /var/lib/barmans3/state /var/log/barmans3; do
  [ -d "$d" ] || install -d -m 750 -o "$owner" -g "$owner" "$d"
done
if [ "$1" = 1 ] && [ "$owner" = barman ]; then
  chown barman:barman /etc/barmans3/barmans3.yaml
fi
