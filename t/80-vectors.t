#!/usr/bin/perl
# The protocol vectors of t/vectors/, through the module's own
# cryptography (the test-only endpoint paygw_test_backend, op "crypto"):
# Alipay RSA2 (request signing, notify verification both ways), WeChat Pay
# v3 (SHA256withRSA signing, callback verification, AEAD-AES-GCM), HMAC-
# SHA256 (RFC 4231) and Standard Webhooks.  Positive and negative cases.
use strict;
use warnings;

use Encode ();
use JSON::PP;
use Test::More;

use PayGW::Test qw(http repo_root);

# test names carry the vectors' Chinese text
binmode(Test::More->builder->$_, ':encoding(UTF-8)')
    for qw(output failure_output todo_output);

my $V = repo_root() . '/t/vectors';

sub vec_file {
    open my $fh, '<', "$V/$_[0]" or die "$_[0]: $!";
    local $/;
    return decode_json(<$fh>);
}

my $ngx = PayGW::Test::Nginx->new(test_module => 1, http => <<'CONF');
    client_body_buffer_size 1m;
    client_max_body_size 1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /_test/backend { paygw_test_backend; }
    }
CONF
$ngx->start;

# JSON::PP decodes to characters; the module works on the UTF-8 bytes
my $json = JSON::PP->new->utf8->canonical;

sub crypto {
    my (%spec) = @_;
    my $r = http(POST => $ngx->url('/_test/backend'),
                 body => $json->encode({ crypto => \%spec }));
    die "crypto: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    return $json->decode($r->{body});
}


# ---- Alipay RSA2 request signing ----------------------------------------------

{
    my $t = vec_file('alipay_rsa2_request.json');
    my $c = crypto(op => 'alipay_canonical', params => $t->{params},
                   keep_sign_type => JSON::PP::true);
    is($c->{canonical}, $t->{canonical_string},
       'alipay request: canonical string (sign_type kept, sorted, raw)');
    my $s = crypto(op => 'rsa_sign', key_pem => $t->{merchant_private_key_pem},
                   message => $t->{canonical_string});
    is($s->{signature}, $t->{signature_base64}, 'alipay request: RSA2 signature');
    ok(crypto(op => 'rsa_verify', key_pem => $t->{merchant_public_key_pem},
              message => $t->{canonical_string},
              signature => $t->{signature_base64})->{valid},
       'alipay request: verifies with the public key');
    for my $n (@{ $t->{negative} }) {
        my $msg = $n->{canonical_string} // $t->{canonical_string};
        my $sig = $n->{signature_base64} // $t->{signature_base64};
        my $key = $n->{public_key_pem} // $t->{merchant_public_key_pem};
        ok(!crypto(op => 'rsa_verify', key_pem => $key,
                   message => $msg, signature => $sig)->{valid},
           "alipay request negative: $n->{change}");
    }
}

# ---- Alipay notify: sign and sign_type removed; and sign_type kept ------------

{
    my $t = vec_file('alipay_notify.json');
    my $c = crypto(op => 'alipay_canonical', params => $t->{params});
    is($c->{canonical}, $t->{canonical_string},
       'alipay notify: canonical string without sign and sign_type');
    ok(crypto(op => 'rsa_verify', key_pem => $t->{alipay_public_key_pem},
              message => $c->{canonical},
              signature => $t->{signature_base64})->{valid},
       'alipay notify: RSA2 verifies');
    for my $n (@{ $t->{negative} }) {
        # whole form bodies are the notify endpoint's to parse (issue 4)
        next unless defined $n->{canonical_string};
        my $msg = $n->{canonical_string};
        my $sig = $n->{signature_base64} // $t->{signature_base64};
        my $key = $n->{alipay_public_key_pem} // $t->{alipay_public_key_pem};
        ok(!crypto(op => 'rsa_verify', key_pem => $key, message => $msg,
                   signature => $sig)->{valid},
           "alipay notify negative: $n->{change}");
    }

    my $k = $t->{also_sign_type_kept};
    my $kc = crypto(op => 'alipay_canonical', params => $k->{params},
                    keep_sign_type => JSON::PP::true);
    is($kc->{canonical}, $k->{canonical_string},
       'alipay notify (second form): canonical with sign_type kept');
    ok(crypto(op => 'rsa_verify', key_pem => $k->{alipay_public_key_pem},
              message => $kc->{canonical},
              signature => $k->{signature_base64})->{valid},
       'alipay notify (second form): verifies with only sign removed');
}

# ---- WeChat Pay v3 SHA256withRSA -------------------------------------------

{
    my $t = vec_file('wechat_v3_sign.json');
    is(crypto(op => 'rsa_sign', key_pem => $t->{private_key_pem},
              message => $t->{message})->{signature},
       $t->{signature_base64}, 'wechat v3: deterministic signature');
    ok(crypto(op => 'rsa_verify', key_pem => $t->{public_key_pem},
              message => $t->{message},
              signature => $t->{signature_base64})->{valid},
       'wechat v3: verifies');
    for my $n (@{ $t->{negative} }) {
        ok(!crypto(op => 'rsa_verify',
                   key_pem => $n->{public_key_pem} // $t->{public_key_pem},
                   message => $n->{message} // $t->{message},
                   signature => $n->{signature_base64}
                                // $t->{signature_base64})->{valid},
           "wechat v3 negative: $n->{change}");
    }
    my @cases = @{ $t->{request_signing_examples}{cases} };
    ok(@cases >= 2, 'wechat v3 request signing examples present');
    for my $e (@cases) {
        # METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n (the header is issue 4's)
        my $msg = "$e->{method}\n$e->{canonical_url}\n$e->{timestamp}\n"
                . "$e->{nonce_str}\n$e->{body}\n";
        is($msg, $e->{message_to_sign}, "wechat v3 message built: $e->{method} $e->{canonical_url}");
        my $sig = crypto(op => 'rsa_sign', key_pem => $t->{private_key_pem},
                         message => $msg)->{signature};
        is($sig, $e->{signature_base64}, "wechat v3 request signature: $e->{method}");
    }
}

# ---- WeChat Pay v3 callback: signature, then the resource ---------------------

{
    my $t = vec_file('wechat_v3_notify.json');
    ok(crypto(op => 'rsa_verify', key_pem => $t->{platform_public_key_pem},
              message => $t->{message_to_verify},
              signature => $t->{headers}{'Wechatpay-Signature'})->{valid},
       'wechat notify: platform signature over ts\\nnonce\\nbody\\n');
    my $res = decode_json(Encode::encode('UTF-8', $t->{body}))->{resource};
    my $p = crypto(op => 'aes_gcm_decrypt', key => $t->{apiv3_key},
                   nonce => $res->{nonce},
                   associated_data => $res->{associated_data},
                   ciphertext => $res->{ciphertext});
    is($p->{plaintext}, $t->{expected}{resource_plaintext},
       'wechat notify: resource decrypted (AES variant by key length)');
    for my $n (@{ $t->{negative} }) {
        next unless defined $n->{body} || defined $n->{headers};
        my %h = (%{ $t->{headers} }, %{ $n->{headers} // {} });
        my $body = $n->{body} // $t->{body};
        my $msg = "$h{'Wechatpay-Timestamp'}\n$h{'Wechatpay-Nonce'}\n$body\n";
        my $key = $n->{platform_public_key_pem} // $t->{platform_public_key_pem};
        my $ok = crypto(op => 'rsa_verify', key_pem => $key, message => $msg,
                        signature => $h{'Wechatpay-Signature'})->{valid};
        ok(!$ok || ($n->{fails_at} // '') =~ /skew|serial|timestamp|probe/,
           "wechat notify negative: $n->{change}");
    }
}

# ---- AEAD-AES-GCM ---------------------------------------------------------------

{
    my $t = vec_file('wechat_aes_gcm.json');
    for my $v (@{ $t->{vectors} }) {
        is(crypto(op => 'aes_gcm_decrypt', key => $v->{key},
                  nonce => $v->{nonce},
                  associated_data => $v->{associated_data},
                  ciphertext => $v->{ciphertext_base64})->{plaintext},
           $v->{plaintext}, "aes-gcm: $v->{name} ($v->{aes_variant})");
    }
    for my $n (@{ $t->{negative} }) {
        ok(crypto(op => 'aes_gcm_decrypt', key => $n->{key},
                  nonce => $n->{nonce},
                  associated_data => $n->{associated_data},
                  ciphertext => $n->{ciphertext_base64})->{error},
           "aes-gcm negative: " . ($n->{change} // $n->{origin}));
    }
}

# ---- HMAC-SHA256, RFC 4231 ----------------------------------------------------

{
    my $t = vec_file('hmac_sha256_rfc4231.json');
    for my $c (@{ $t->{cases} }) {
        is(crypto(op => 'hmac_sha256', key_hex => $c->{key_hex},
                  data_hex => $c->{data_hex})->{hex},
           $c->{hmac_sha256_hex}, "hmac rfc4231 case $c->{case}");
    }
    for my $n (@{ $t->{negative} }) {
        isnt(crypto(op => 'hmac_sha256', key_hex => $n->{key_hex},
                    data_hex => $n->{data_hex})->{hex},
             $n->{hmac_sha256_hex}, "hmac negative: $n->{change}");
    }
}

# ---- Standard Webhooks ------------------------------------------------------------

{
    my $t = vec_file('standard_webhooks.json');
    my $sig = crypto(op => 'webhook_sign', secret => $t->{secret},
                     id => $t->{'webhook-id'},
                     timestamp => $t->{'webhook-timestamp'},
                     body => $t->{body})->{signature};
    is($sig, $t->{'webhook-signature'}, 'standard webhooks: v1 signature');
    # the module signs: each changed input must give another signature
    # (the verifier-side cases -- missing headers, stale times, malformed
    # signatures -- belong to the webhook receiver, not to us)
    for my $n (@{ $t->{negative} }) {
        next unless grep { defined $n->{$_} } qw(body webhook-id webhook-timestamp);
        my $s = crypto(op => 'webhook_sign', secret => $t->{secret},
                       id => $n->{'webhook-id'} // $t->{'webhook-id'},
                       timestamp => $n->{'webhook-timestamp'}
                                    // $t->{'webhook-timestamp'},
                       body => $n->{body} // $t->{body})->{signature};
        like($s, qr{^v1,[A-Za-z0-9+/]{43}=$}, "standard webhooks: well-formed ($n->{change})");
        isnt($s, $t->{'webhook-signature'}, "standard webhooks negative: $n->{change}");
    }
}

# ---- callbacks through the notify code (/v1/notify/alipay, /wechat) -----------

{
    my $t = vec_file('alipay_notify.json');
    my $v = sub {
        my ($form, $pem) = @_;
        return crypto(op => 'alipay_notify_verify', form_body => $form,
                      public_key_pem => $pem)->{valid};
    };
    ok($v->($t->{form_body}, $t->{alipay_public_key_pem}),
       'alipay notify: the form verifies (sign and sign_type removed)');
    my $k = $t->{also_sign_type_kept};
    ok($v->($k->{form_body}, $k->{alipay_public_key_pem}),
       'alipay notify: signed with sign_type kept also verifies (SDK rule)');
    # the vector's negatives, as forms: a changed amount, a re-encoded
    # JSON value, another key
    (my $amount = $t->{form_body}) =~ s/total_amount=0\.10/total_amount=100.10/;
    isnt($amount, $t->{form_body}, 'alipay notify: amount tamper applies');
    ok(!$v->($amount, $t->{alipay_public_key_pem}),
       'alipay notify negative: total_amount 0.10 -> 100.10');
    (my $spaced = $t->{form_body}) =~ s/%22%2C%22/%22%2C+%22/;
    isnt($spaced, $t->{form_body}, 'alipay notify: re-encoding applies');
    ok(!$v->($spaced, $t->{alipay_public_key_pem}),
       'alipay notify negative: fund_bill_list re-serialized with spaces');
    ok(!$v->($t->{form_body}, $k->{alipay_public_key_pem}),
       'alipay notify negative: another public key');
    (my $nosign = $t->{form_body}) =~ s/(^|&)sign=[^&]*//;
    ok(!$v->($nosign, $t->{alipay_public_key_pem}),
       'alipay notify negative: no sign');
    ok(!$v->($t->{form_body} . '&x=%ZZ', $t->{alipay_public_key_pem}),
       'alipay notify negative: a malformed escape');
}

{
    my $t = vec_file('wechat_v3_notify.json');
    my $check = sub {
        my (%c) = @_;
        my %h = (%{ $t->{headers} }, %{ $c{headers} // {} });
        delete $h{$_} for grep { !defined $h{$_} } keys %h;
        return crypto(op => 'wechat_notify_verify', headers => \%h,
                      body => $c{body} // $t->{body},
                      serial => $t->{platform_certificate_serial},
                      public_key_pem => $t->{platform_public_key_pem},
                      apiv3_key => $c{apiv3_key} // $t->{apiv3_key},
                      now => $c{now} // $t->{now});
    };
    my $r = $check->();
    ok($r->{valid}, 'wechat notify: verifies and decrypts (AES-128, 16-byte key)');
    is($r->{event_type}, $t->{expected}{event_type}, 'wechat notify: event_type');
    is($r->{plaintext}, $t->{expected}{resource_plaintext},
       'wechat notify: the decrypted resource');
    for my $c (@{ $t->{clock_boundary_valid} }) {
        ok($check->(now => $c->{now})->{valid}, "wechat notify: $c->{change}");
    }
    for my $n (@{ $t->{negative} }) {
        my $res = $check->(%$n);
        ok(!$res->{valid}, "wechat notify negative: $n->{change}")
            or diag explain $res;
    }
    my $g = $t->{generated_aes256_callback};
    my $res = crypto(op => 'wechat_notify_verify', headers => $g->{headers},
                     body => $g->{body},
                     serial => $t->{platform_certificate_serial},
                     public_key_pem => $t->{platform_public_key_pem},
                     apiv3_key => $g->{apiv3_key}, now => $g->{now});
    ok($res->{valid}, 'wechat notify: TRANSACTION.SUCCESS, AES-256 (32-byte key)');
    is($res->{event_type}, 'TRANSACTION.SUCCESS', 'wechat notify: its event_type');
    is($res->{plaintext}, $g->{expected}{resource_plaintext},
       'wechat notify: its decrypted transaction');
}

done_testing;
