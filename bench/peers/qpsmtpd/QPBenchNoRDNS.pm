# Loaded with perl -M before qpsmtpd-forkserver/-prefork: no PTR lookup per
# connection (0.94 ignores its -H flag), so the benchmark makes no DNS query.
package QPBenchNoRDNS;
use strict;
use Qpsmtpd::TcpServer;
{
    no warnings 'redefine';
    *Qpsmtpd::TcpServer::tcpenv = sub {
        my ($laddr, $iaddr) = @_;
        return ($laddr, $iaddr, $iaddr ? "[$iaddr]" : "[noip!]");
    };
}
1;
