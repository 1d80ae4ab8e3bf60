#!/usr/bin/perl
# An independent DKIM verifier for the tests: Perl's Mail::DKIM (not dkimpy),
# asking the loopback DNS server given as arguments for the keys.
# Usage: mail_dkim_verify.pl NAMESERVER PORT < message
# Prints one line per signature: "<algorithm> <domain> <selector> <result detail>".
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS::Resolver;

my ($nameserver, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(
    nameservers => [$nameserver], port => $port, recurse => 0,
    udp_timeout => 5, tcp_timeout => 5, retry => 1,
));
my $verifier = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\015?\012\z/\015\012/;
    $verifier->PRINT($line);
}
$verifier->CLOSE();
foreach my $signature ($verifier->signatures) {
    printf "%s %s %s %s\n", $signature->algorithm, $signature->domain,
        $signature->selector, $signature->result_detail;
}
