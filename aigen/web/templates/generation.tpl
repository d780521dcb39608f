% from aigen.web.views import short_text
% rebase('base', title=short_text(g['prompt'], 70) or 'Generation ' + g['id'])
<p class="crumbs"><a href="/">← All generations</a></p>
% include('section', g=g, full=True, eager=True)
<section class="details">
  <h2>Details</h2>
  <dl class="facts">
    <dt>Generation</dt><dd><code>{{g['id']}}</code></dd>
    <dt>Requested</dt><dd>{{t(g['created_at'])}}</dd>
    <dt>Finished</dt><dd>{{t(g['generated_at']) or '—'}}</dd>
    % if g['video_provider']:
    <dt>Videos by</dt><dd>{{g['video_provider']}}{{(' / ' + g['video_model']) if g['video_model'] else ''}}</dd>
    % end
    % if g['image_provider']:
    <dt>Images by</dt><dd>{{g['image_provider']}}{{(' / ' + g['image_model']) if g['image_model'] else ''}}</dd>
    % end
    <dt>Seed</dt><dd>{{g['seed'] if g['seed'] is not None else '—'}}</dd>
  </dl>
  <table class="assets">
    <thead><tr><th>Asset</th><th>Status</th><th>Size</th><th>Dimensions</th><th>Seed</th><th>Tries</th><th>File or error</th></tr></thead>
    <tbody>
    % for a in g['assets']:
    <tr class="asset-{{a['status']}}">
      <td data-label="Asset">{{a['kind']}} {{a['index']}}</td>
      <td data-label="Status">{{a['status']}}</td>
      <td data-label="Size">{{size(a['bytes'])}}</td>
      <td data-label="Dimensions">{{'%sx%s' % (a['width'], a['height']) if a['width'] else ''}}{{(', %.1f s' % a['duration']) if a['duration'] and a['kind'] == 'video' else ''}}
        % if a.get('note'):
        <br><small class="note">{{a['note']}}</small>
        % end
      </td>
      <td data-label="Seed">{{a['seed'] if a['seed'] is not None else ''}}</td>
      <td data-label="Tries">{{a['attempts'] or 0}}</td>
      <td data-label="File or error">
        % if a['url']:
        <a href="{{a['url']}}">{{a['name']}}</a> · <a href="{{a['download_url']}}" download>Download<span class="vh"> {{a['kind']}} {{a['index']}} ({{a['format']}}, {{size(a['bytes'])}})</span></a>
        % elif a['error']:
        {{a['error']}}
        % end
      </td>
    </tr>
    % end
    </tbody>
  </table>
</section>
