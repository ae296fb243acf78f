# pjdfstest (vendored in test/lab/vendor/pjdfstest) on one mount.
# Usage: perl pjdfstest.pl MOUNTDIR [SELECTION...]
#   SELECTION: a directory or a .t file relative to tests/ (default: all).
# test/lab/pjdfstest.ts stages the binary, tests/ and an `openssl` shim in
# /duofs-lab/run/pjdfstest (PJD_BASE overrides it; the lab root has no
# openssl, and misc.sh's namegen uses `openssl md5`). Each .t runs with its working directory on the mount,
# parsed by TAP::Parser, and prints one line the host parses:
#   PJD-FILE <file> planned=<n> run=<n> passed=<n> exit=<n> secs=<s> failed=<list|->
# plus up to 20 PJD-NOTOK lines (what the failing checks tried), and after
# each directory a progress line:
#   PJD-DIR <dir> files=<n> planned=<n> passed=<n> secs=<s>
# A TODO check that fails counts as passed (TAP's rule, prove's too).
use strict;
use warnings;
use File::Find;
use Time::HiRes qw(time);
use TAP::Parser;

my ($mnt, @sel) = @ARGV;
die "usage: pjdfstest.pl MOUNTDIR [SELECTION...]\n" unless defined $mnt;
my $base = $ENV{PJD_BASE} || '/duofs-lab/run/pjdfstest';
my $tests = "$base/tests";
my $limit = $ENV{PJD_FILE_TIMEOUT} || 1800;
$ENV{PATH} = "$base/bin:$ENV{PATH}";
-x "$base/pjdfstest" or die "no $base/pjdfstest\n";

# tests/misc.sh's namegen: `dd if=/dev/urandom ... | openssl md5 | awk '{print $NF}'`.
# Without a working openssl every name is "pjdfstest_": n0, n1 and n2 collide
# and e.g. chown/00.t fails 114 of 1280 checks (each `symlink n0 n1` EEXIST,
# the lstat and unlink after it), on any server. Refuse to run like that.
my @names = map { my $n = `dd if=/dev/urandom bs=1k count=1 2>/dev/null | openssl md5 | awk '{print \$NF}'`; chomp $n; $n } 1 .. 2;
unless ($names[0] =~ /^[0-9a-f]{32}$/ && $names[0] ne $names[1]) {
  print "PJD-ERROR namegen (openssl md5) gives '$names[0]' and '$names[1]': every test's names would collide\n";
  exit 2;
}

my $work = "$mnt/pjdfstest";
mkdir $work, 0755 or die "mkdir $work: $!\n";
chmod 0755, $work;
chdir $work or die "chdir $work: $!\n";

@sel = ('.') unless @sel;
my @files;
for my $s (@sel) {
  my $p = "$tests/$s";
  if (-d $p) {
    find({ no_chdir => 1, wanted => sub { push @files, $File::Find::name if /\.t$/ && -f $_ } }, $p);
  } elsif (-f $p) {
    push @files, $p;
  } else {
    print "PJD-ERROR no test or directory $s\n";
    exit 2;
  }
}
my %seen;
@files = grep { !$seen{$_}++ } map { s{/\./}{/}gr =~ s{//+}{/}gr } @files;
@files = sort @files;
print "PJD-PLAN files=" . scalar(@files) . "\n";

my ($dir, %dsum) = ('');
my %total = (files => 0, planned => 0, passed => 0);
my $t_all = time;
sub flush_dir {
  return unless $dir ne '';
  printf "PJD-DIR %s files=%d planned=%d passed=%d secs=%.1f\n", $dir, @dsum{qw(files planned passed)}, time - $dsum{t0};
}

for my $f (@files) {
  my $rel = substr($f, length($tests) + 1);
  my ($d) = $rel =~ m{^([^/]+)/};
  $d //= '.';
  if ($d ne $dir) {
    flush_dir();
    $dir = $d;
    %dsum = (files => 0, planned => 0, passed => 0, t0 => time);
  }
  my $t0 = time;
  my $p = TAP::Parser->new({ exec => ['timeout', '-k', '5', $limit, '/bin/sh', $f] });
  my ($passed, $notok) = (0, 0);
  my @failed;
  while (defined(my $r = $p->next)) {
    next unless $r->is_test;
    if ($r->is_ok) { $passed++; next; }
    push @failed, $r->number;
    print "PJD-NOTOK $rel ", $r->as_string, "\n" if ++$notok <= 20;
  }
  my $planned = $p->tests_planned // 0;
  # Checks planned but never printed (the script died) are failures too.
  push @failed, map { "$_" } ($p->tests_run + 1 .. $planned) if $p->tests_run < $planned;
  printf "PJD-FILE %s planned=%d run=%d passed=%d exit=%d secs=%.1f failed=%s\n",
    $rel, $planned, $p->tests_run, $passed, $p->exit // -1, time - $t0, @failed ? compress(@failed) : '-';
  $dsum{files}++; $dsum{planned} += $planned; $dsum{passed} += $passed;
  $total{files}++; $total{planned} += $planned; $total{passed} += $passed;
}
flush_dir();
printf "PJD-TOTAL files=%d planned=%d passed=%d secs=%.1f\n", @total{qw(files planned passed)}, time - $t_all;
exit 0;

# 1,2,3,7,9,10 -> 1-3,7,9-10
sub compress {
  my @n = sort { $a <=> $b } @_;
  my @out;
  while (@n) {
    my $lo = shift @n;
    my $hi = $lo;
    $hi = shift @n while @n && $n[0] == $hi + 1;
    push @out, $lo == $hi ? "$lo" : "$lo-$hi";
  }
  return join(',', @out);
}
