package PayGW::Receiver;

# A merchant's webhook endpoint (t/sim/webhook_receiver.js): verifies
# every Standard Webhooks signature with the merchant's secrets, counts
# deliveries by webhook-id and answers by path (/hook/ok, /hook/fail/N,
# /hook/status/410, /hook/redirect, /hook/timeout, /hook/reset,
# /hook/slow/MS, /hook/big).
#
#   my $rx = PayGW::Receiver->start(secrets => [$whsec]);
#   $rx->url('/hook/ok');  $rx->deliveries;  $rx->clear;

use strict;
use warnings;

use PayGW::Test ();
our @ISA = ('PayGW::Test::Proc');

sub start {
    my ($class, %o) = @_;
    my $dir = PayGW::Test::_mkdir('receiver');
    my $self = bless {dir => $dir, log => "$dir/receiver.log",
                      port => $o{port} // PayGW::Test::free_port(),
                      secrets => $o{secrets} // [],
                      tls => $o{tls}}, $class;
    $self->{query_port} = $o{tls} ? PayGW::Test::free_port() : $self->{port};
    return $self->_spawn(%o);
}

# tls => [CERT_PEM, KEY_PEM]: https; /health and /deliveries are then
# also served in plain http on query_port (the tests' client has no TLS)
sub _command {
    my ($self) = @_;
    return ('node', "$PayGW::Test::REPO/t/sim/webhook_receiver.js",
            '--port', $self->{port},
            map({ ('--secret', $_) } @{ $self->{secrets} }),
            $self->{tls} ? ('--tls-cert', $self->{tls}[0],
                            '--tls-key', $self->{tls}[1],
                            '--query-port', $self->{query_port}) : ());
}

sub _ready {
    my ($self) = @_;
    return PayGW::Test::_port_open($self->{port})
        && PayGW::Test::http(GET => $self->qurl('/health'), timeout => 2)
               ->{status} == 200;
}

sub url {
    ($_[0]{tls} ? 'https' : 'http') . "://127.0.0.1:$_[0]{port}" . ($_[1] // '')
}

sub qurl { "http://127.0.0.1:$_[0]{query_port}" . ($_[1] // '') }

# {requests => [{id, path, status, sig_ok, ts_ok, type, parallel}],
#  counts => {webhook-id => n}, parallel => n}
sub deliveries { PayGW::Test::http(GET => $_[0]->qurl('/deliveries'))->{json} }
sub clear { PayGW::Test::http(DELETE => $_[0]->qurl('/deliveries')) }

# requests_for(EVENT_ID): the requests that carried that webhook-id.
sub requests_for {
    my ($self, $id) = @_;
    return grep { ($_->{id} // '') eq $id } @{ $self->deliveries->{requests} };
}


package PayGW::Receiver::DNS;

# t/sim/dns.js: A records from a fixed map, for nginx's resolver.
#   my $dns = PayGW::Receiver::DNS->start(map => {'a.test' => '10.0.0.5'});
#   resolver 127.0.0.1:$dns->{port};

use strict;
use warnings;

use IO::Socket::INET ();
our @ISA = ('PayGW::Test::Proc');

sub start {
    my ($class, %o) = @_;
    my $dir = PayGW::Test::_mkdir('dns');
    my $self = bless {dir => $dir, log => "$dir/dns.log",
                      port => $o{port} // PayGW::Test::free_port(),
                      map => $o{map} // {}}, $class;
    return $self->_spawn(%o);
}

sub _command {
    my ($self) = @_;
    return ('node', "$PayGW::Test::REPO/t/sim/dns.js", '--port', $self->{port},
            map { ('--map', "$_=$self->{map}{$_}") } sort keys %{ $self->{map} });
}

# ready when it answers a query
sub _ready {
    my ($self) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}",
                                  Proto => 'udp') or return 0;
    my $q = pack('n6', 0x1234, 0x0100, 1, 0, 0, 0)
          . join('', map { chr(length) . $_ } qw(ready test)) . "\0" . pack('n2', 1, 1);
    $s->send($q) or return 0;
    my $rin = '';
    vec($rin, fileno $s, 1) = 1;
    return 0 unless select(my $rout = $rin, undef, undef, 0.5);
    my $buf;
    $s->recv($buf, 512);
    return length($buf // '') >= 12;
}

sub port { $_[0]{port} }

1;
