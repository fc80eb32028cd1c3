package WaPayload;

# Webhook bodies shaped like the Cloud API's, with ids unique across runs.

use strict;
use warnings;

use JSON::PP;
use Time::HiRes qw(time);

use Exporter 'import';
our @EXPORT_OK = qw(wamid body value message status encode field_body echo);

my $seq = 0;
my $json = JSON::PP->new->utf8->canonical;

sub encode { $json->encode($_[0]) }

sub wamid {
    return sprintf 'wamid.HBgM%d%d%d', $$, int(time * 1000), ++$seq;
}

# body(value, value, ...) or body([entry values], [entry values], ...)
sub body {
    my @entries = map {
        my @values = ref $_ eq 'ARRAY' ? @$_ : ($_);
        { id => '102290129340398',
          changes => [ map { { field => 'messages', value => $_ } } @values ] }
    } @_;
    return encode({ object => 'whatsapp_business_account', entry => \@entries });
}

# field_body(field, value, time => entry time, waba => entry id): one entry,
# one change of any field (Meta sends entry.time with account level fields)
sub field_body {
    my ($field, $value, %o) = @_;
    my $entry = { id => $o{waba} // '102290129340398',
                  changes => [ { field => $field, value => $value } ] };
    $entry->{time} = $o{time} if defined $o{time};
    return encode({ object => 'whatsapp_business_account', entry => [ $entry ] });
}

# echo(to => customer, id => ..., text => ...): one message_echoes[] object
# of smb_message_echoes, a message the business sent from the Business app
sub echo {
    my (%o) = @_;
    return {
        from      => $o{from} // '15550783881',
        to        => $o{to} // '16505551234',
        id        => $o{id} // wamid(),
        timestamp => $o{timestamp} // ('' . int time),
        type      => 'text',
        text      => { body => $o{text} // 'Sent from the Business app' },
    };
}

# value(phone_number_id => ..., contacts => [...], messages => [...], ...)
sub value {
    my (%o) = @_;
    my $v = {
        messaging_product => 'whatsapp',
        metadata => { display_phone_number => '15550783881',
                      phone_number_id => $o{phone_number_id} // '106540352242922' },
    };
    for my $k (qw(contacts messages statuses errors message_echoes)) {
        $v->{$k} = $o{$k} if $o{$k};
    }
    return $v;
}

my %media = (
    image    => { caption => 'a photo', mime_type => 'image/jpeg' },
    video    => { caption => 'a clip', mime_type => 'video/mp4' },
    document => { caption => 'the invoice', filename => 'inv.pdf',
                  mime_type => 'application/pdf' },
    audio    => { mime_type => 'audio/ogg; codecs=opus', voice => JSON::PP::true },
    sticker  => { mime_type => 'image/webp', animated => JSON::PP::false },
);

# message(type, from => ..., id => ..., text => ...): one messages[] object
sub message {
    my ($type, %o) = @_;
    my $m = {
        from      => $o{from} // '16505551234',
        id        => $o{id} // wamid(),
        timestamp => $o{timestamp} // ('' . int time),
        type      => $type,
    };

    if ($type eq 'text') {
        $m->{text} = { body => $o{text} // 'Does it come in another color?' };
    } elsif ($media{$type}) {
        $m->{$type} = { %{ $media{$type} }, id => '1037543291543636',
                        sha256 => 'Ifw8PEyZk4cZJpiCEFiz1Kc3vDyuV6Gy3B2Y2oA9Z8E=' };
    } elsif ($type eq 'location') {
        $m->{location} = { latitude => 32.0853, longitude => 34.7818,
                           name => 'Office', address => 'Rothschild 1' };
    } elsif ($type eq 'contacts') {
        $m->{contacts} = [ { name => { formatted_name => 'Dana Levi',
                                       first_name => 'Dana' },
                             phones => [ { phone => '+972501112222',
                                           type => 'CELL' } ] } ];
    } elsif ($type eq 'interactive') {
        $m->{interactive} = { type => 'button_reply',
                              button_reply => { id => 'yes-1', title => 'Yes' } };
    } elsif ($type eq 'list_reply') {
        $m->{type} = 'interactive';
        $m->{interactive} = { type => 'list_reply',
                              list_reply => { id => 'r1', title => 'Red',
                                              description => 'the red one' } };
    } elsif ($type eq 'button') {
        $m->{button} = { payload => 'STOP', text => 'Stop promotions' };
        $m->{context} = { from => '15550783881', id => wamid() };
    } elsif ($type eq 'reaction') {
        $m->{reaction} = { message_id => wamid(), emoji => "\x{1F44D}" };
    } elsif ($type eq 'order') {
        $m->{order} = { catalog_id => '1', product_items => [
            { product_retailer_id => 'sku-1', quantity => 2,
              item_price => 10, currency => 'USD' } ] };
    } elsif ($type eq 'system') {
        $m->{system} = { body => 'User changed number', type => 'user_changed_number',
                         new_wa_id => '16505550000' };
    } elsif ($type eq 'unsupported') {
        $m->{errors} = [ { code => 131051, title => 'Message type unknown',
                           message => 'Message type unknown',
                           error_data => { details => 'Message type is currently not supported.' } } ];
    }
    return $m;
}

sub status {
    my ($st, %o) = @_;
    my $s = {
        id           => $o{id} // wamid(),
        status       => $st,
        timestamp    => $o{timestamp} // ('' . int time),
        recipient_id => $o{to} // '16505551234',
    };
    $s->{biz_opaque_callback_data} = $o{callback} if $o{callback};
    if ($st eq 'failed') {
        $s->{errors} = [ { code => $o{code} // 131050,
                           title => $o{title} // 'User stopped marketing messages',
                           message => 'User stopped marketing messages',
                           error_data => { details => 'The user opted out.' } } ];
    } else {
        $s->{conversation} = { id => 'c1', origin => { type => 'service' } };
        $s->{pricing} = { billable => JSON::PP::true, pricing_model => 'PMP',
                          category => 'service' };
    }
    return $s;
}

1;
